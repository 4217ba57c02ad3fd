"""The dedup pass with its evaluations on an executor (threads, a local Ray cluster): the
serial pass's result, evaluation for evaluation; errors as in the serial pass."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from support import chain_family

import tensorstore as ts
from tensorstore.corpora import digits
from tensorstore.errors import EvaluatorError
from tensorstore.executor import SerialExecutor, parallelism


def drift_evaluator(family, calls=None):
    """A deterministic accuracy: 1 minus how far the weights moved from the model's own
    (a closure: Ray sends it by value). ``calls`` counts every evaluation."""

    def evaluate(name, tensors):
        if calls is not None:
            calls.append(name)
        moved = sum(float(np.linalg.norm(tensors[k] - v)) for k, v in family[name].items())
        return 1.0 - 20.0 * moved / 1000.0

    return evaluate


def run(tmp_path, tag, family, evaluate, executor, **options):
    """Store ``family``, run the pass; the report, the audit rows and the stored models."""
    with ts.open(tmp_path / tag, "w", page_size="64KiB", block_bytes="4KiB", codec="raw") as s:
        for n, t in family.items():
            s.add_model(n, t)
        report = s.dedup(list(family), evaluate=evaluate, executor=executor, **options)
        assert s.verify().ok
        audit = sorted((r["model"], r["block_id"], r["representative"], r["error"], r["accuracy_before"],
                        r["accuracy_after"]) for r in s.catalog()["replacements"].to_pylist())
        stored = {n: s.load_model(n) for n in family}
    models = [(m.model, m.candidates, m.evaluations, m.accuracy_before, m.accuracy_after,
               [(r.block_id, r.representative, r.error, r.positions) for r in m.replaced]) for m in report.models]
    return models, audit, stored


def assert_same(a, b):
    assert a[0] == b[0]  # per model: candidates, evaluations, accuracies, every replacement
    assert a[1] == b[1]  # the audit trail
    for n, tensors in a[2].items():
        for k, v in tensors.items():
            assert v.tobytes() == b[2][n][k].tobytes()


CHAIN = dict(tolerance=0.01, max_accuracy_drop=0.01, keep_bases=False)


def test_threads_give_the_serial_result_when_an_earlier_model_changes_a_later_ones_candidates(tmp_path):
    family = chain_family()
    serial_calls, pool_calls = [], []
    serial = run(tmp_path, "serial", family, drift_evaluator(family, serial_calls), None, **CHAIN)
    lock = threading.Lock()

    def counted(name, tensors):  # list.append is atomic; the lock keeps the count exact anyway
        with lock:
            return drift_evaluator(family, pool_calls)(name, tensors)

    with ThreadPoolExecutor(4) as pool:
        ahead = run(tmp_path, "pool", family, counted, pool, **CHAIN)
    assert_same(serial, ahead)
    assert sum(len(m[5]) for m in serial[0]) >= 32 and {m[0] for m in serial[0] if m[5]} >= {"t1", "t2"}
    assert len(serial_calls) == sum(m[2] for m in serial[0])
    # Planned ahead without t1's replacements, t2 evaluated prefixes the serial pass never
    # asks for: the exact pass asked again for what it needed.
    assert len(pool_calls) > len(serial_calls)


def test_ray_gives_the_serial_result_on_the_chain_family(tmp_path, ray_executor):
    family = chain_family()
    serial = run(tmp_path, "serial", family, drift_evaluator(family), None, **CHAIN)
    on_ray = run(tmp_path, "ray", family, drift_evaluator(family), ray_executor, **CHAIN)
    assert_same(serial, on_ray)


def test_ray_gives_the_serial_result_on_the_digits_family(tmp_path, ray_executor):
    # A real evaluator, importable on the workers (sent by reference).
    family = digits.build_family()
    options = dict(tolerance=0.05, max_accuracy_drop=0.01)
    serial = run(tmp_path, "serial", family, digits.evaluate, None, **options)
    on_ray = run(tmp_path, "ray", family, digits.evaluate, ray_executor, **options)
    assert_same(serial, on_ray)
    assert sum(len(m[5]) for m in serial[0]) > 0
    assert ray_executor.workers == 2


def test_an_evaluator_that_raises_on_ray_is_an_evaluator_error_and_changes_nothing(tmp_path, ray_executor):
    family = chain_family()

    def evaluate(name, tensors):
        if name == "t3":
            raise ValueError("no held-out data for t3")
        return 1.0

    with ts.open(tmp_path / "s", "w", page_size="64KiB", block_bytes="4KiB", codec="raw") as s:
        for n, t in family.items():
            s.add_model(n, t)
        before = s.stats()
        with pytest.raises(EvaluatorError, match="'t3'.*no held-out data for t3") as caught:
            s.dedup(list(family), evaluate=evaluate, executor=ray_executor, **CHAIN)
        assert type(caught.value.__cause__) is ValueError  # the evaluator's own error, not Ray's wrapper
        assert "Traceback" not in str(caught.value)
        assert s.stats() == before
        assert s.catalog()["replacements"].num_rows == 0


def test_an_evaluator_answer_that_is_not_a_number_is_refused_as_in_the_serial_pass(tmp_path):
    family = chain_family()
    with ts.open(tmp_path / "s", "w", page_size="64KiB", block_bytes="4KiB", codec="raw") as s:
        for n, t in family.items():
            s.add_model(n, t)
        before = s.stats()
        with ThreadPoolExecutor(2) as pool, pytest.raises(EvaluatorError, match="unusable|not a number"):
            s.dedup(list(family), evaluate=lambda n, t: "high", executor=pool, **CHAIN)
        assert s.stats() == before


def test_serial_executor_runs_at_once_and_hands_errors_to_result():
    ex = SerialExecutor()
    ran = []
    f = ex.submit(lambda x: ran.append(x) or x * 2, 21)
    assert ran == [21] and f.done() and f.result() == 42
    g = ex.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        g.result()
    assert parallelism(ex) == 1
    assert parallelism(ThreadPoolExecutor(3)) == 3


def test_ray_tasks_run_with_one_thread_and_this_process_keeps_its_own(tmp_path):
    import json
    import os
    import subprocess
    import sys

    # A fresh cluster from a driver with no thread settings (the tests set 1 everywhere):
    # its tasks must still run with one thread; the driver keeps one per core.
    code = """
import json, os
from tensorstore.corpora import bert_numpy
from tensorstore.ray_executor import RayExecutor

def probe():
    import os, torch
    from threadpoolctl import threadpool_info
    from tensorstore.corpora import bert_numpy
    return {"env": [os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")],
            "numpy_evaluator": bert_numpy.default_threads(), "torch": torch.get_num_threads(),
            "blas": max([i["num_threads"] for i in threadpool_info()] or [1])}

with RayExecutor(num_cpus=2) as ex:
    print(json.dumps({"worker": ex.submit(probe).result(), "driver": bert_numpy.default_threads()}))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["worker"] == {"env": ["1", "1", "1"], "numpy_evaluator": 1, "torch": 1, "blas": 1}
    assert seen["driver"] == (os.cpu_count() or 1)
