"""The near-duplicate pass ranks by bytes saved per unit of risk, and a larger tolerance
never ends with more bytes than a smaller one."""

import shutil

import numpy as np
import pytest

import tensorstore as ts

ROWS, COLS = 256, 64  # a 64 KiB float32 tensor: 16 blocks of 4 KiB (16 rows each)
BLOCK_ROWS = 16


def _pair():
    """A base and a fine-tune of it: blocks 0-7 moved a little (relative error 0.004), blocks
    8-15 small (a tenth of the others' scale) and moved a lot (0.15). By magnitude alone the
    small blocks come first; by error, the close ones."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    base[8 * BLOCK_ROWS :] *= 0.1
    tuned = base.copy()
    for b in range(16):
        rows = slice(b * BLOCK_ROWS, (b + 1) * BLOCK_ROWS)
        noise = rng.standard_normal((BLOCK_ROWS, COLS)).astype(np.float32)
        error = 0.004 if b < 8 else 0.15
        tuned[rows] += error * np.linalg.norm(base[rows]) / np.linalg.norm(noise) * noise
    return {"w": base}, {"w": tuned}


def _evaluator(tuned):
    """Accuracy falls with the L2 change made to each block of the fine-tune."""

    def evaluate(name, tensors):
        if name != "tuned":
            return 1.0
        change = (tensors["w"] - tuned["w"]).reshape(16, -1)
        return 1.0 - 0.01 * float(np.linalg.norm(change, axis=1).sum())

    return evaluate


@pytest.fixture
def built(tmp_path):
    base, tuned = _pair()
    path = tmp_path / "store"
    with ts.open(path, "w", page_size="64KiB", block_bytes="4KiB") as s:  # encoded (the default)
        s.add_model("base", base)
        s.add_model("tuned", tuned)
    return path, tuned


def test_a_larger_tolerance_never_ends_with_more_bytes(built, tmp_path):
    path, tuned = built
    evaluate = _evaluator(tuned)
    ends = {}
    for tolerance in (0.01, 0.05, 0.2, 0.5):
        copy = tmp_path / f"t{tolerance}"
        shutil.copytree(path, copy)
        with ts.open(copy, "r+") as s:
            report = s.dedup(evaluate=evaluate, max_accuracy_drop=0.01, tolerance=tolerance)
            ends[tolerance] = s.stats().encoded_bytes
            assert all(r.error <= tolerance for m in report.models for r in m.replaced)
            assert report.models[1].accuracy_after >= report.models[1].accuracy_before - 0.01
            assert s.verify().ok
    values = [ends[t] for t in sorted(ends)]
    assert all(b <= a for a, b in zip(values, values[1:])), ends
    assert values[-1] < values[0] or values[0] < _encoded(path)  # the pass did save something


def _encoded(path):
    with ts.open(path, "r") as s:
        return s.stats().encoded_bytes


def test_the_bytes_a_replacement_frees_are_its_stored_bytes(built):
    path, tuned = built
    with ts.open(path, "r+") as s:
        before = s.stats().encoded_bytes
        report = s.dedup(evaluate=_evaluator(tuned), max_accuracy_drop=0.01, tolerance=0.2)
        assert report.stored_bytes_saved > 0
        assert s.stats().encoded_bytes == before - report.stored_bytes_saved
        m = report.models[1]
        levels = [r["level"] for r in m.rounds]
        assert levels == sorted(levels) and all(r.level in levels and r.error <= r.level for r in m.replaced)


def test_rounds_spend_the_budget_on_close_blocks_first(built):
    """Within the budget (0.01: a change of 1.0 in L2 summed over blocks) fit seven of the
    eight close blocks (0.13 each) or two far ones (0.48 each): low error goes first."""
    path, tuned = built
    with ts.open(path, "r") as s:
        report = s.dedup(evaluate=_evaluator(tuned), max_accuracy_drop=0.01, tolerance=0.2, dry_run=True)
    at = sorted(r.positions[0][1] for r in report.models[1].replaced)
    assert len(at) == 7 and max(at) < 8


def test_a_round_replaces_the_block_that_frees_most_stored_bytes_per_risk(tmp_path):
    """Two blocks moved by the same relative error: one in a few elements (its delta is
    tiny as stored), one everywhere (its delta is most of a block). The budget buys one
    replacement: the pass takes the one that frees more bytes, though it is the larger of
    the two (by magnitude alone, the smaller would go first)."""
    rng = np.random.default_rng(1)
    base = rng.standard_normal((32, 64)).astype(np.float32)  # two 4 KiB blocks
    base[:16] *= 0.5
    tuned = base.copy()
    sparse = np.zeros(1024, dtype=np.float32)
    sparse[rng.choice(1024, 8, replace=False)] = 1.0
    dense = rng.standard_normal(1024).astype(np.float32)
    for b, noise in ((0, sparse), (1, dense)):
        rows = slice(16 * b, 16 * (b + 1))
        tuned[rows] += (0.004 * np.linalg.norm(base[rows]) / np.linalg.norm(noise) * noise).reshape(16, 64)

    def evaluate(name, tensors):
        if name != "tuned":
            return 1.0
        return 1.0 - 0.01 * int((tensors["w"] != tuned).reshape(2, -1).any(axis=1).sum())

    with ts.open(tmp_path / "s", "w", page_size="64KiB", block_bytes="4KiB") as s:
        s.add_model("base", {"w": base})
        s.add_model("tuned", {"w": tuned})
        report = s.dedup(evaluate=evaluate, max_accuracy_drop=0.015, tolerance=0.01, dry_run=True)
    (replaced,) = report.models[1].replaced
    assert replaced.positions == [("w", 1)]
    assert [r["candidates"] for r in report.models[1].rounds if r["candidates"]][0] == 2
    assert replaced.stored > 1024  # a good part of the 4 KiB block; the sparse delta is a few bytes
