"""The tolerance and members suites of ``tensorstore bench`` on the quick embedding family."""

import numpy as np
import pytest

import tensorstore as ts
from tensorstore.bench import baselines, members, tolerance
from tensorstore.corpora import registry


@pytest.fixture(scope="module")
def corpus():
    return registry.load("embedding-quick")


def test_members_sum_to_the_store_and_to_the_baseline(corpus, tmp_path):
    res = members.main("embedding-quick", str(tmp_path))
    assert [r["model"] for r in res["members"]] == list(corpus.family)
    with ts.open(tmp_path / "s", "w", page_size=corpus.page_size, block_bytes=corpus.block_bytes) as s:
        for name, tensors in corpus.family.items():
            s.add_model(name, tensors)
        assert res["total"]["store_bytes"] == s.stats().encoded_bytes
        assert sum(sum(r["store_blocks"].values()) for r in res["members"]) == s.stats().unique_blocks
    assert res["total"]["zipllm_bytes"] == baselines.zipllm_style(corpus.family, corpus.parents)["bytes"]
    assert res["total"]["logical_bytes"] == sum(a.nbytes for t in corpus.family.values() for a in t.values())
    assert res["zipllm_bit_exact"]
    assert "| **total** |" in members.table(res)


def test_tolerance_levels_match_separate_passes_and_never_grow(tmp_path):
    res = tolerance.main("embedding-quick", str(tmp_path), max_accuracy_drop=0.005, tolerance=0.05, separate=True)
    rows = res["levels"]
    assert [r["tolerance"] for r in rows] == [0.001, 0.002, 0.005, 0.01, 0.02, 0.05]
    sizes = np.array([r["encoded_bytes"] for r in rows])
    assert np.all(np.diff(sizes) <= 0) and sizes[-1] < res["encoded_bytes_lossless"]
    assert [r["separate_pass_encoded_bytes"] for r in rows] == sizes.tolist()
    assert all(r["max_drop"] <= 0.005 for r in rows)
