"""The catalog as pyarrow Tables, for queries with pyarrow, pandas, polars or DuckDB."""

from __future__ import annotations

import json

import lmdb
import pyarrow as pa

from . import catalog as cat
from . import codec, modelfiles
from .pagefile import page_id_of


def catalog_tables(store, txn: lmdb.Transaction) -> dict[str, pa.Table]:
    """Return ``models``, ``tensors``, ``blocks`` (one row per block reference), ``pages``,
    ``distinct_blocks``, ``replacements`` (the near-duplicate audit trail) and ``files``
    (the files kept with models: model, file, bytes, and the digest its manifest records,
    null for files stored before manifests were kept)."""
    dbs = store.env.dbs
    block_rows: dict[int, cat.BlockRecord] = {}
    with txn.cursor(db=dbs["blocks"]) as cur:
        for k, v in cur:
            block_id = cat.ID.unpack(bytes(k))[0]
            block_rows[block_id] = cat.decode_block(block_id, v)

    models = {"model": [], "model_id": [], "domain": [], "tensors": [], "logical_bytes": [], "created": [], "metadata": []}
    tensors = {"model": [], "tensor": [], "dtype": [], "shape": [], "nbytes": [], "blocks": []}
    blocks = {"model": [], "tensor": [], "index": [], "block_id": [], "page_id": [], "offset": [], "nbytes": [],
              "encoding": [], "stored_bytes": [], "ref_block": []}
    for m in store.records(txn):
        models["model"].append(m.name)
        models["model_id"].append(m.model_id)
        models["domain"].append(m.domain)
        models["tensors"].append(len(m.tensors))
        models["logical_bytes"].append(m.logical_bytes)
        models["created"].append(m.created)
        models["metadata"].append(json.dumps(m.metadata, ensure_ascii=False))
        for t in m.tensors:
            tensors["model"].append(m.name)
            tensors["tensor"].append(t.name)
            tensors["dtype"].append(t.dtype)
            tensors["shape"].append(list(t.shape))
            tensors["nbytes"].append(t.nbytes)
            tensors["blocks"].append(len(t.block_ids))
            for i, block_id in enumerate(t.block_ids.tolist()):
                b = block_rows[block_id]
                blocks["model"].append(m.name)
                blocks["tensor"].append(t.name)
                blocks["index"].append(i)
                blocks["block_id"].append(block_id)
                blocks["page_id"].append(b.page_id)
                blocks["offset"].append(b.offset)
                blocks["nbytes"].append(b.nbytes)
                blocks["encoding"].append(codec.NAMES[b.encoding])
                blocks["stored_bytes"].append(b.stored)
                blocks["ref_block"].append(b.ref or None)

    pages = {"page_id": [], "used_bytes": [], "live_bytes": [], "blocks": []}
    with txn.cursor(db=dbs["pagemeta"]) as cur:
        for k, v in cur:
            p = cat.decode_page(page_id_of(bytes(k)), v)
            pages["page_id"].append(p.page_id)
            pages["used_bytes"].append(p.used)
            pages["live_bytes"].append(p.live)
            pages["blocks"].append(len(p.block_ids))

    distinct = {
        "block_id": list(block_rows),
        "page_id": [b.page_id for b in block_rows.values()],
        "offset": [b.offset for b in block_rows.values()],
        "nbytes": [b.nbytes for b in block_rows.values()],
        "encoding": [codec.NAMES[b.encoding] for b in block_rows.values()],
        "stored_bytes": [b.stored for b in block_rows.values()],
        "ref_block": [b.ref or None for b in block_rows.values()],
        "refs": [b.refs for b in block_rows.values()],
        "domain": [b.domain for b in block_rows.values()],
        "digest": [b.digest.hex() for b in block_rows.values()],
    }
    from .dedup import audit_rows

    audit = audit_rows(txn, dbs["replacements"])
    replacements = {
        "model": [r["model"] for r in audit],
        "tensor": [r["positions"][0][0] for r in audit],
        "index": [r["positions"][0][1] for r in audit],
        "positions": [len(r["positions"]) for r in audit],
        "block_id": [r["block_id"] for r in audit],
        "representative": [r["representative"] for r in audit],
        "nbytes": [r["nbytes"] for r in audit],
        "error": [r["error"] for r in audit],
        "accuracy_before": [r["accuracy_before"] for r in audit],
        "accuracy_after": [r["accuracy_after"] for r in audit],
        "time": [r["time"] for r in audit],
    }
    kept = _files(txn, dbs.get("files"), {m: n for n, m in zip(models["model"], models["model_id"])})

    i64 = pa.int64()
    return {
        "models": pa.table(models, schema=pa.schema([("model", pa.string()), ("model_id", i64), ("domain", pa.string()), ("tensors", i64), ("logical_bytes", i64), ("created", pa.float64()), ("metadata", pa.string())])),
        "tensors": pa.table(tensors, schema=pa.schema([("model", pa.string()), ("tensor", pa.string()), ("dtype", pa.string()), ("shape", pa.list_(i64)), ("nbytes", i64), ("blocks", i64)])),
        "blocks": pa.table(blocks, schema=pa.schema([("model", pa.string()), ("tensor", pa.string()), ("index", i64), ("block_id", i64), ("page_id", i64), ("offset", i64), ("nbytes", i64), ("encoding", pa.string()), ("stored_bytes", i64), ("ref_block", i64)])),
        "pages": pa.table(pages, schema=pa.schema([("page_id", i64), ("used_bytes", i64), ("live_bytes", i64), ("blocks", i64)])),
        "replacements": pa.table(replacements, schema=pa.schema([
            ("model", pa.string()), ("tensor", pa.string()), ("index", i64), ("positions", i64), ("block_id", i64),
            ("representative", i64), ("nbytes", i64), ("error", pa.float64()), ("accuracy_before", pa.float64()),
            ("accuracy_after", pa.float64()), ("time", pa.float64())])),
        "files": pa.table(kept, schema=pa.schema([("model", pa.string()), ("file", pa.string()), ("bytes", i64), ("digest", pa.string())])),
        "distinct_blocks": pa.table(distinct, schema=pa.schema([("block_id", i64), ("page_id", i64), ("offset", i64), ("nbytes", i64), ("encoding", pa.string()), ("stored_bytes", i64), ("ref_block", i64), ("refs", i64), ("domain", i64), ("digest", pa.string())])),
    }


def _files(txn: lmdb.Transaction, db, names: dict[int, str]) -> dict[str, list]:
    """The rows of the ``files`` table (none for a store made before files could be kept)."""
    found: list[tuple[int, str, int]] = []
    manifests: dict[int, dict[str, tuple[int, str]]] = {}
    for r in modelfiles.records(txn, db) if db is not None else ():
        if r.path is None:
            manifests[r.model_id] = modelfiles.decode_manifest(r.value)
        else:
            found.append((r.model_id, r.path, len(r.value)))
    return {
        "model": [names.get(i) for i, _, _ in found],
        "file": [p for _, p, _ in found],
        "bytes": [n for _, _, n in found],
        "digest": [manifests.get(i, {}).get(p, (0, None))[1] for i, p, _ in found],
    }
