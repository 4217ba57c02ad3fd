"""``Store.verify()``: every checksum and every cross-reference of the catalog, checked.

Reads one snapshot and recomputes from scratch what the store keeps as running state:
page checksums, each block's content digest against its bytes, that every block lies
inside its page without overlapping another, reference counts against the models that
hold them, the totals behind ``stats()``, and the files kept with models (each belongs to
a model and matches the length and digest its model's manifest records), and the content
codes (each names a stored block that may be a reference, is filed in the content index,
and every such block has one: :func:`tensorstore.contentcodes.check`).
"""

from __future__ import annotations

import struct
from collections import Counter

import lmdb

from tensorstore_index.exact import block_digest

from . import catalog as cat
from . import codec, contentcodes, dtypes, modelfiles
from .digests import strong_digest
from .catalog import id_key
from .dtypes import DTYPES
from .errors import CorruptionError
from .pagefile import page_id_of
from .reports import VerifyReport


def verify_store(store, txn: lmdb.Transaction) -> VerifyReport:
    """Check the snapshot ``txn``; damage of any kind is a problem in the report, never an
    exception (records that cannot even be decoded, LMDB pages that cannot be read)."""
    try:
        return _verify(store, txn)
    except (CorruptionError, lmdb.Error, ValueError, KeyError, IndexError, TypeError, OverflowError,
            UnicodeDecodeError, struct.error) as exc:
        problem = f"the catalog is damaged where verify cannot read on ({type(exc).__name__}: {' '.join(str(exc).split())})"
        return VerifyReport(ok=False, problems=[problem], models=0, pages=0, blocks=0)


def _verify(store, txn: lmdb.Transaction) -> VerifyReport:
    dbs = store.env.dbs
    problems: list[str] = []
    problem = problems.append

    # Pages and their checksums.
    page_ids = store.page_file.ids(txn)
    payloads = {}
    for page_id in page_ids:
        try:
            payloads[page_id] = store.page_file.read(txn, page_id, recheck=True)
        except CorruptionError as exc:
            problem(str(exc))

    # Page records: the blocks each page says it holds.
    page_records: dict[int, cat.PageRecord] = {}
    with txn.cursor(db=dbs["pagemeta"]) as cur:
        for k, v in cur:
            page_id = page_id_of(bytes(k))
            try:
                page_records[page_id] = cat.decode_page(page_id, v)
            except CorruptionError as exc:
                problem(str(exc))
    for page_id in sorted(set(page_ids) - set(page_records)):
        problem(f"page {page_id} has no catalog record")
    for page_id in sorted(set(page_records) - set(page_ids)):
        problem(f"page record {page_id} names a page that is missing")

    # Blocks: location, content digest, hash index.
    blocks: dict[int, cat.BlockRecord] = {}
    with txn.cursor(db=dbs["blocks"]) as cur:
        for k, v in cur:
            block_id = cat.ID.unpack(bytes(k))[0]
            try:
                blocks[block_id] = b = cat.decode_block(block_id, v)
            except CorruptionError as exc:
                problem(str(exc))
                continue
            rec = page_records.get(b.page_id)
            if rec is None or block_id not in rec.block_ids:
                problem(f"block {block_id} says it is in page {b.page_id}, which does not list it")
                continue
            if b.offset + b.stored > min(rec.used, store.page_size):
                problem(f"block {block_id} runs past the used part of page {b.page_id}")
                continue
            found = txn.get(b.key, db=dbs["hashes"])
            if found is None or int.from_bytes(found, "big") != block_id:
                problem(f"block {block_id} is missing from the hash index")
    hashes = txn.stat(dbs["hashes"])["entries"]
    if hashes != len(blocks):
        problem(f"the hash index has {hashes} entries for {len(blocks)} blocks")

    for rec in page_records.values():
        spans = sorted((blocks[i].offset, blocks[i].stored) for i in rec.block_ids if i in blocks)
        for (a, n), (b, _) in zip(spans, spans[1:]):
            if a + n > b:
                problem(f"blocks overlap in page {rec.page_id}")
                break
        live = sum(n for _, n in spans)
        if live != rec.live:
            problem(f"page {rec.page_id} records {rec.live} live bytes; its blocks hold {live}")
        for i in rec.block_ids:
            if i not in blocks:
                problem(f"page {rec.page_id} lists block {i}, which is missing")

    # Models: every reference resolves, sizes agree, reference counts add up.
    refs: Counter[int] = Counter(b.ref for b in blocks.values() if b.ref)  # deltas hold their references
    users: dict[int, set[str]] = {}
    models = tensors = logical = 0
    names: dict[int, str] = {}  # model id -> name, for the files kept with models
    all_models = True  # every model record was read: a file of no model in names is an orphan
    try:
        for m in store.records(txn):
            models += 1
            names[m.model_id] = m.name
            tensors += len(m.tensors)
            logical += m.logical_bytes
            for t in m.tensors:
                itemsize = DTYPES[t.dtype].itemsize if t.dtype in DTYPES else None
                if itemsize is None:
                    problem(f"model {m.name!r} tensor {t.name!r} has unknown dtype {t.dtype!r}")
                elif _prod(t.shape) * itemsize != t.nbytes:
                    problem(f"model {m.name!r} tensor {t.name!r}: shape {t.shape} does not make {t.nbytes} bytes")
                for block_id, (start, stop) in zip(t.block_ids.tolist(), t.spans()):
                    refs[block_id] += 1
                    users.setdefault(block_id, set()).add(m.name)
                    b = blocks.get(block_id)
                    if b is None:
                        problem(f"model {m.name!r} tensor {t.name!r} references missing block {block_id}")
                    elif b.nbytes != stop - start:
                        problem(f"model {m.name!r} tensor {t.name!r}: block {block_id} has {b.nbytes} bytes, needs {stop - start}")
    except CorruptionError as exc:
        problem(str(exc))
        all_models = False
    for block_id, b in blocks.items():
        if b.refs != refs.get(block_id, 0):
            problem(f"block {block_id} counts {b.refs} references; models and deltas hold {refs.get(block_id, 0)}")
    _check_contents(blocks, payloads, users, problem)
    contentcodes.check(txn, dbs, blocks, problem)
    if store.env.dbs.get("files") is not None:
        _check_files(txn, store.env.dbs["files"], names, all_models, problem)

    # Running totals behind stats().
    try:
        s = store.state(txn)
        expected = {
            "models": models, "tensors": tensors, "logical_bytes": logical, "blocks": sum(refs.values()) - sum(1 for b in blocks.values() if b.ref),
            "unique_blocks": len(blocks), "unique_bytes": sum(b.nbytes for b in blocks.values()), "pages": len(page_ids),
            "encoded_bytes": sum(b.stored for b in blocks.values()),
            "encodings": [sum(b.encoding == e for b in blocks.values()) for e in range(len(codec.NAMES))],
        }
        for field, want in expected.items():
            if getattr(s, field) != want:
                problem(f"stats field {field} is {getattr(s, field)}; the catalog says {want}")
        if page_ids and s.next_page_id <= max(page_ids):
            problem("the page id counter is behind the pages")
        if blocks and s.next_block_id <= max(blocks):
            problem("the block id counter is behind the blocks")
    except CorruptionError as exc:
        problem(str(exc))

    return VerifyReport(ok=not problems, problems=problems, models=models, pages=len(page_ids), blocks=len(blocks))


def _check_files(txn: lmdb.Transaction, db, names: dict[int, str], all_models: bool, problem) -> None:
    """The files kept with models: each belongs to a model of the catalog, and matches the
    length and digest its model's manifest records (models stored before manifests were
    kept have none: their files are checked for what a bare record can say)."""
    kept: dict[int, dict[str, bytes]] = {}
    manifests: dict[int, bytes] = {}
    with txn.cursor(db=db) as cur:
        for k, v in cur:
            try:
                model_id, path = modelfiles.parse_key(bytes(k))
            except CorruptionError as exc:
                problem(str(exc))
                continue
            if path is None:
                manifests[model_id] = bytes(v)
            else:
                kept.setdefault(model_id, {})[path] = bytes(v)
    for model_id in sorted(set(kept) | set(manifests)):
        files = kept.get(model_id, {})
        if model_id in names:
            name = repr(names[model_id])
        elif all_models:
            what = ", ".join(repr(p) for p in sorted(files)) or "a file manifest"
            problem(f"the files database keeps {what} for model id {model_id}, which is not in the catalog")
            continue
        else:
            name = f"id {model_id}"  # its record may be past the damage reported above
        if model_id not in manifests:
            continue  # stored before manifests were kept
        try:
            manifest = modelfiles.decode_manifest(manifests[model_id])
        except CorruptionError as exc:
            problem(f"model {name}: the manifest of its kept files {exc}")
            continue
        for path in sorted(set(files) | set(manifest)):
            if path not in files:
                problem(f"model {name} file {path!r} is missing (its manifest lists it)")
            elif path not in manifest:
                problem(f"model {name} file {path!r} is not in its manifest")
            elif len(files[path]) != manifest[path][0]:
                problem(f"model {name} file {path!r} is {len(files[path])} bytes; its manifest records {manifest[path][0]}")
            elif modelfiles.digest(files[path]) != manifest[path][1]:
                problem(f"model {name} file {path!r} does not match its recorded digest")


def _check_contents(blocks: dict[int, cat.BlockRecord], payloads: dict, users: dict[int, set[str]], problem) -> None:
    """Decode every block whose page is intact and compare its digest. A damaged block
    damages every delta that uses it as reference: the problem names the models of both."""
    dependants: dict[int, list[int]] = {}
    for b in blocks.values():
        if b.ref:
            dependants.setdefault(b.ref, []).append(b.block_id)
    for block_id, b in blocks.items():
        if b.page_id not in payloads:
            continue  # its page failed its checksum: reported above
        why = _content_problem(b, blocks, payloads)
        if why is None:
            continue
        hit = {block_id, *dependants.get(block_id, ())}
        names = sorted(set().union(*(users.get(i, set()) for i in hit)))
        role = f", the reference of {len(hit) - 1} delta block(s)," if len(hit) > 1 else ""
        problem(f"block {block_id} in page {b.page_id} ({codec.NAMES[b.encoding]}){role} {why}; it affects "
                + (", ".join(f"model {n!r}" for n in names) if names else "no model"))


def _content_problem(b: cat.BlockRecord, blocks: dict[int, cat.BlockRecord], payloads: dict) -> str | None:
    """What is wrong with the content of ``b``, or None."""

    def stored(x: cat.BlockRecord):
        return payloads[x.page_id][x.offset : x.offset + x.stored]

    try:
        if b.encoding == codec.RAW:
            data = stored(b)
        else:
            ref = None
            if b.ref:
                r = blocks.get(b.ref)
                if r is None or r.encoding == codec.DELTA or r.nbytes != b.nbytes or r.page_id not in payloads:
                    why = ("missing" if r is None else "a delta itself" if r.encoding == codec.DELTA
                           else "of another length" if r.nbytes != b.nbytes else "in a damaged page")
                    return f"needs reference block {b.ref}, which is {why}"
                lay = dtypes.layout_of_code(r.dtype_code)
                ref = stored(r) if r.encoding == codec.RAW else codec.decode(stored(r), r.nbytes, lay).data
            data = codec.decode(stored(b), b.nbytes, dtypes.layout_of_code(b.dtype_code), ref).data
    except (ValueError, KeyError) as exc:
        return f"does not decode ({exc})"
    if block_digest(data, b.dtype_code) != b.digest:
        return "does not match its content digest"
    if b.strong and strong_digest(data) != b.strong:
        return "does not match its BLAKE3 digest"
    return None


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
