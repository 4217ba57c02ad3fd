"""The small files kept with a model (``add_model(..., files=)``): their records in the
``files`` database and the manifest that lets ``verify`` check them.

Each file is one record: key = the model's id (8 bytes, big-endian) + its relative path in
UTF-8, value = its bytes as given. Beside them, under the bare model id (a path is never
empty, so no file has that key), the model's *manifest*: each path's length and XXH3-128
digest, as JSON. Stores written before manifests were kept hold files without one: they
load as before, and ``verify`` checks of them what a bare record can say (its key decodes,
its model exists).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import lmdb
import xxhash

from .catalog import ID, id_key
from .errors import CorruptionError

MANIFEST_VERSION = 1


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One record of the ``files`` database: a kept file, or (``path is None``) a manifest."""

    model_id: int
    path: str | None
    value: bytes


def digest(data: bytes) -> str:
    """The digest a manifest records for ``data`` (XXH3-128, hex): catches damage, as the
    page checksums do; not a defence against someone who can write the store."""
    return xxhash.xxh3_128_hexdigest(data)


def encode_manifest(files: Mapping[str, bytes]) -> bytes:
    return json.dumps(
        {"version": MANIFEST_VERSION, "files": {p: [len(d), digest(d)] for p, d in sorted(files.items())}},
        separators=(",", ":"),
    ).encode()


def decode_manifest(value: bytes) -> dict[str, tuple[int, str]]:
    """path -> (length, digest). Raises ``CorruptionError`` for a record that does not decode."""
    try:
        doc = json.loads(bytes(value).decode())
        if doc.get("version") != MANIFEST_VERSION:
            raise ValueError(f"version {doc.get('version')!r}, expected {MANIFEST_VERSION}")
        out = {}
        for path, (length, hexdigest) in doc["files"].items():
            if not isinstance(length, int) or not isinstance(hexdigest, str):
                raise ValueError(f"entry {path!r} is not [length, digest]")
            out[path] = (length, hexdigest)
        return out
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CorruptionError(f"does not decode ({exc})") from None


def put_files(txn: lmdb.Transaction, db, model_id: int, files: Mapping[str, bytes]) -> None:
    """Replace the files kept with model ``model_id`` by ``files`` (and their manifest)."""
    drop_files(txn, db, model_id)
    prefix = id_key(model_id)
    for path, data in files.items():
        txn.put(prefix + path.encode(), data, db=db)
    if files:
        txn.put(prefix, encode_manifest(files), db=db)


def drop_files(txn: lmdb.Transaction, db, model_id: int) -> None:
    """Delete every file kept with model ``model_id``, and its manifest."""
    prefix = id_key(model_id)
    with txn.cursor(db=db) as cur:
        if cur.set_range(prefix):
            while bytes(cur.key()).startswith(prefix):
                if not cur.delete():
                    break


def read_files(txn: lmdb.Transaction, db, model_id: int) -> dict[str, bytes]:
    """The files kept with model ``model_id``, by relative path (the manifest left out)."""
    prefix = id_key(model_id)
    out = {}
    with txn.cursor(db=db) as cur:
        if cur.set_range(prefix):
            for k, v in cur:
                k = bytes(k)
                if not k.startswith(prefix):
                    break
                if len(k) > len(prefix):
                    out[k[len(prefix):].decode()] = bytes(v)
    return out


def parse_key(key: bytes) -> tuple[int, str | None]:
    """(model id, path) of a ``files`` record's key; path None for a manifest. Raises
    ``CorruptionError`` for a key too short to hold a model id or a path that is not UTF-8."""
    if len(key) < ID.size:
        raise CorruptionError(f"the files database has a record with a malformed key ({key.hex()})")
    model_id = ID.unpack(key[: ID.size])[0]
    if len(key) == ID.size:
        return model_id, None
    try:
        return model_id, key[ID.size:].decode()
    except UnicodeDecodeError:
        raise CorruptionError(
            f"a file kept with model id {model_id} has a name that is not UTF-8 ({key[ID.size:].hex()})"
        ) from None


def records(txn: lmdb.Transaction, db) -> Iterator[FileRecord]:
    """Every record of the ``files`` database, in key order (see :func:`parse_key`)."""
    with txn.cursor(db=db) as cur:
        for k, v in cur:
            model_id, path = parse_key(bytes(k))
            yield FileRecord(model_id, path, bytes(v))
