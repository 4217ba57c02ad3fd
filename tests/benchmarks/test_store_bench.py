"""Store-core microbenchmarks (pytest-benchmark).

CI runs each once with ``--benchmark-disable`` (asserting the results are right); for
figures run ``make bench`` or ``pytest tests/benchmarks/test_store_bench.py --benchmark-enable``.
The corpus-level ratios in docs/benchmarks.md come from ``tensorstore bench --corpus minilm``.
"""

import itertools

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import tensorstore as ts


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    return {f"layer{i}.weight": rng.standard_normal((384, 1536)).astype(np.float32) for i in range(6)} | {
        f"layer{i}.bias": rng.standard_normal(1536).astype(np.float32) for i in range(6)
    }


def _equal(a, b):
    return a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_ingest_new(benchmark, tmp_path, model):
    counter = itertools.count()

    def setup():
        return (ts.open(tmp_path / f"s{next(counter)}", "w"),), {}

    def add(store):
        store.add_model("m", model)
        return store

    store = benchmark.pedantic(add, setup=setup, rounds=3)
    assert _equal(store.load_model("m"), model)


def test_ingest_partly_present(benchmark, tmp_path, model):
    """A fine-tune into a store holding its base: every other tensor changed, the rest found
    stored, within one transaction."""
    counter = itertools.count()
    tuned = {k: (v + 1).astype(v.dtype) if i % 2 else v for i, (k, v) in enumerate(model.items())}
    base_bytes = sum(v.nbytes for v in model.values())
    changed_bytes = sum(v.nbytes for i, v in enumerate(model.values()) if i % 2)

    def setup():
        store = ts.open(tmp_path / f"s{next(counter)}", "w")
        store.add_model("base", model)
        return (store,), {}

    def add(store):
        store.add_model("tuned", tuned)
        return store

    store = benchmark.pedantic(add, setup=setup, rounds=3)
    assert store.stats().unique_bytes == base_bytes + changed_bytes
    assert _equal(store.load_model("tuned"), tuned) and _equal(store.load_model("base"), model)
    assert store.verify().ok


def test_ingest_present(benchmark, tmp_path, model):
    names = (f"copy{i}" for i in itertools.count())
    with ts.open(tmp_path / "s", "w") as store:
        store.add_model("m", model)
        before = store.stats().unique_bytes
        benchmark(lambda: store.add_model(next(names), model))
        assert store.stats().unique_bytes == before


def test_load_warm(benchmark, tmp_path, model):
    with ts.open(tmp_path / "s", "w") as store:
        store.add_model("m", model)
        out = benchmark(store.load_model, "m")
    assert _equal(out, model)


def test_safetensors_load_warm(benchmark, tmp_path, model):
    path = str(tmp_path / "m.safetensors")
    save_file(model, path)
    out = benchmark(load_file, path)
    assert _equal(out, model)
