"""Delta references by content against by position only, on corpora where names fail.

For each corpus (``minilm``: names match, the control; ``minilm-renamed``; ``minilm-vocab``,
:mod:`tensorstore.corpora.derived`), the whole family is added in order to an encoded store
(``codec="auto"``, no ``base=``) with ``content_refs`` on and off, alternated ``repeat``
times; reported: ``encoded_bytes`` and blocks per encoding (exact, the same every run), the
median ingest seconds of the family and of the root alone (a base into an empty store),
and the ZipLLM-style baseline (told each member's base) beside them.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from .. import open as open_store
from . import baselines
from .compare import load_corpus

CORPORA = ("minilm", "minilm-renamed", "minilm-vocab", "minilm-vocab-rows")


def _ingest(c, where: Path, content_refs: bool) -> dict:
    with open_store(where, "w", page_size=c.page_size, block_bytes=c.block_bytes, codec="auto",
                    content_refs=content_refs) as s:
        t0 = time.perf_counter()
        first = None
        for name, tensors in c.family.items():
            s.add_model(name, tensors)
            if first is None:
                first = time.perf_counter() - t0
        seconds = time.perf_counter() - t0
        st = s.stats()
    shutil.rmtree(where, ignore_errors=True)
    return {"seconds": seconds, "root_seconds": first, "encoded_bytes": st.encoded_bytes,
            "encodings": dict(st.encodings), "logical_bytes": st.logical_bytes}


def run(corpus: str, workdir: str | None, repeat: int) -> dict:
    c = load_corpus(corpus)
    tmp = Path(tempfile.mkdtemp(prefix="ts-contentrefs-", dir=workdir))
    runs: dict[bool, list[dict]] = {True: [], False: []}
    loads = []
    try:
        for i in range(repeat):
            for flag in ((True, False) if i % 2 == 0 else (False, True)):  # alternated: drift hits both
                runs[flag].append(_ingest(c, tmp / f"s{i}-{flag}", flag))
            loads.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    zipllm = baselines.zipllm_style(c.family, c.parents, repeat=1)
    out = {"corpus": corpus, "models": len(c.family), "logical_bytes": runs[True][0]["logical_bytes"],
           "zipllm_bytes": sum(m["bytes"] for m in zipllm["by_model"].values()), "load_average_1min": loads}
    for flag, key in ((True, "content"), (False, "position_only")):
        rs = runs[flag]
        out[key] = {"encoded_bytes": rs[0]["encoded_bytes"], "encodings": rs[0]["encodings"],
                    "ingest_s": statistics.median(r["seconds"] for r in rs),
                    "root_ingest_s": statistics.median(r["root_seconds"] for r in rs)}
    return out


def main(corpora: list[str], workdir: str | None, repeat: int) -> list[dict]:
    """Each corpus's comparison; ``scaling`` (not a corpus) is the lookup's cost against
    the store's size (:mod:`tensorstore.bench.contentcodes`)."""
    from . import contentcodes

    return [contentcodes.run(workdir, repeat) if corpus == "scaling" else run(corpus, workdir, repeat)
            for corpus in corpora]


def table(results: list[dict]) -> str:
    from . import contentcodes

    scaling = [contentcodes.table(r) for r in results if r["corpus"] == "scaling"]
    results = [r for r in results if r["corpus"] != "scaling"]
    if not results:
        return "\n\n".join(scaling)
    lines = ["| corpus | logical MB | position only: MB (raw/packed/delta) | + content: MB (raw/packed/delta) | "
             "ZipLLM-style MB | content / ZipLLM-style | ingest s, position only / + content | root ingest s, position only / + content |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        p, c = r["position_only"], r["content"]

        def enc(x):
            e = x["encodings"]
            return f"{x['encoded_bytes'] / 1e6:.2f} ({e.get('raw', 0)}/{e.get('packed', 0)}/{e.get('delta', 0)})"

        lines.append(f"| {r['corpus']} | {r['logical_bytes'] / 1e6:.1f} | {enc(p)} | {enc(c)} | {r['zipllm_bytes'] / 1e6:.2f} | "
                     f"{c['encoded_bytes'] / r['zipllm_bytes']:.3f} | {p['ingest_s']:.2f} / {c['ingest_s']:.2f} | "
                     f"{p['root_ingest_s']:.2f} / {c['root_ingest_s']:.2f} |")
    return "\n\n".join(["\n".join(lines)] + scaling)
