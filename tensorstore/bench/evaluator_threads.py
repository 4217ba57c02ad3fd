"""How much of the machine one evaluation already uses: the bound on what spreading
evaluations over workers can gain.

``python -m tensorstore.bench.evaluator_threads [--corpus minilm] [--model NAME] [--repeat 3]``
times the corpus's evaluator on one model in a fresh process per run, with
``OMP_NUM_THREADS=1`` (what a Ray worker of one CPU runs) and unset (what the serial pass
runs: one thread per core), alternated. With ``cores`` workers of one thread each and the
evaluations spread perfectly, an evaluation costs at best ``t1 / cores`` of wall time, so no
executor on this machine finishes the evaluation phase in less than ``t1 / (cores * t_all)``
of the serial pass's time (``bound_vs_serial``). Figures in ``docs/benchmarks.md`` (The
near-duplicate pass on Ray).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

_ONE = """
import json, sys, time
from tensorstore.corpora.registry import load
c = load(sys.argv[1])
tensors = c.family[sys.argv[2]]
c.evaluate(sys.argv[2], tensors)  # warm: data, tokenizer and caches
t = time.perf_counter()
c.evaluate(sys.argv[2], tensors)
print(json.dumps(time.perf_counter() - t))
"""


def _timed(corpus: str, model: str, threads: int | None) -> float:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    done = subprocess.run([sys.executable, "-c", _ONE, corpus, model], env=env, capture_output=True, text=True,
                          check=True)
    return float(done.stdout.strip().splitlines()[-1])


def measure(corpus: str, model: str, repeat: int) -> dict:
    from ..threads import default_threads

    one, every = [], []
    for _ in range(repeat):
        one.append(_timed(corpus, model, 1))
        every.append(_timed(corpus, model, None))
    t1, t_all, cores = statistics.median(one), statistics.median(every), default_threads()
    return {"corpus": corpus, "model": model, "cores": cores, "one_thread_s": one, "every_core_s": every,
            "speedup_of_threads": t1 / t_all, "bound_vs_serial": t1 / (cores * t_all),
            "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="minilm")
    parser.add_argument("--model", default="minilm-top1-spam-s3")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(measure(args.corpus, args.model, args.repeat), indent=1))


if __name__ == "__main__":
    main()
