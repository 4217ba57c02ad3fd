"""The near-duplicate pass serially and on a local Ray cluster: same result, wall time.

    python -m tensorstore.bench.ray_dedup [--corpus minilm] [--model M ...] [--workers 2] [--workdir DIR]

Stores the corpus's family once (exact dedup, as ``tensorstore bench`` does), copies the
store, and runs ``dedup`` with the corpus's evaluator on each copy: once in this process,
once with a :class:`~tensorstore.ray_executor.RayExecutor` on a local cluster of
``--workers`` CPUs (started before the clock runs). ``--model`` keeps only the models
named (in the family's order), for a shorter run. Reports both passes' wall time, the
time spent inside the evaluator in the serial pass, how many evaluations each made
(the Ray pass evaluates some prefixes ahead that the exact pass then does not ask for)
and whether the replacements, accuracies and stored models are identical. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from .. import open as open_store


def _load(corpus: str):
    from ..corpora.registry import load

    return load(corpus)


def _outcome(store_path: Path, report) -> dict:
    with open_store(store_path, "r") as s:
        audit = sorted((r["model"], r["block_id"], r["representative"], r["error"], r["accuracy_before"],
                        r["accuracy_after"]) for r in s.catalog()["replacements"].to_pylist())
        stats = s.stats()
    models = [(m.model, m.candidates, m.evaluations, m.accuracy_before, m.accuracy_after,
               [(r.block_id, r.representative, r.error) for r in m.replaced]) for m in report.models]
    return {"models": models, "audit": audit, "unique_bytes": stats.unique_bytes, "encoded_bytes": stats.encoded_bytes}


def run(corpus: str, workdir: Path, workers: int, max_accuracy_drop: float, tolerance: float,
        models: list[str] | None = None) -> dict:
    from ..ray_executor import RayExecutor

    c = _load(corpus)
    family = {n: t for n, t in c.family.items() if models is None or n in models}
    if models is not None and len(family) != len(set(models)):
        raise SystemExit(f"not in the {corpus} family: {sorted(set(models) - set(family))}")
    serial_path, ray_path = workdir / "serial", workdir / "ray"
    with open_store(serial_path, "w", page_size=c.page_size, block_bytes=c.block_bytes) as s:
        for name, tensors in family.items():
            s.add_model(name, tensors)
    shutil.copytree(serial_path, ray_path)

    spent = [0.0, 0]

    def timed(name, tensors):
        t = time.perf_counter()
        try:
            return c.evaluate(name, tensors)
        finally:
            spent[0] += time.perf_counter() - t
            spent[1] += 1

    options = dict(max_accuracy_drop=max_accuracy_drop, tolerance=tolerance)
    out: dict = {"corpus": corpus, "models": list(family), "workers": workers, **options,
                 "load_before": os.getloadavg()}
    with open_store(serial_path, "r+") as s:
        t = time.perf_counter()
        report = s.dedup(evaluate=timed, **options)
        out["serial_s"] = round(time.perf_counter() - t, 2)
    out["serial_evaluator_s"] = round(spent[0], 2)
    out["serial_evaluations"] = spent[1]
    serial = _outcome(serial_path, report)
    out["load_after_serial"] = os.getloadavg()

    counted = [0]

    with RayExecutor(num_cpus=workers) as executor:
        executor.submit(int, 0).result()  # a worker is up before the clock runs

        class Counting:  # the evaluations Ray ran, ahead or exact
            workers = executor.workers

            def submit(self, fn, *args):
                counted[0] += 1
                return executor.submit(fn, *args)

        with open_store(ray_path, "r+") as s:
            t = time.perf_counter()
            report = s.dedup(evaluate=c.evaluate, executor=Counting(), **options)
            out["ray_s"] = round(time.perf_counter() - t, 2)
    out["ray_evaluations"] = counted[0]
    on_ray = _outcome(ray_path, report)
    out["load_after_ray"] = os.getloadavg()
    out["ratio"] = round(out["ray_s"] / out["serial_s"], 3)
    out["same_replacements"] = serial["models"] == on_ray["models"] and serial["audit"] == on_ray["audit"]
    out["replaced_blocks"] = sum(len(m[5]) for m in serial["models"])
    out["pass_evaluations"] = sum(m[2] for m in serial["models"])
    out["unique_bytes"] = [serial["unique_bytes"], on_ray["unique_bytes"]]
    with open_store(serial_path, "r") as a, open_store(ray_path, "r") as b:
        out["same_models"] = all(
            all(x.tobytes() == y[k].tobytes() for k, x in a.load_model(n).items()) for n in a for y in [b.load_model(n)]
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tensorstore.bench.ray_dedup")
    p.add_argument("--corpus", default="minilm", help="a corpus of tensorstore.corpora.registry (default minilm)")
    p.add_argument("--model", action="append", dest="models", metavar="M", help="keep only these models (repeatable)")
    p.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray cluster (default 2)")
    p.add_argument("--max-accuracy-drop", type=float, default=0.005)
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--workdir", type=Path, default=None, help="where the two stores go (default: a temporary directory)")
    args = p.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ts-ray-dedup-", dir=args.workdir) as work:
        out = run(args.corpus, Path(work), args.workers, args.max_accuracy_drop, args.tolerance, args.models)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
