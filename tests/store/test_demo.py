"""`tensorstore demo`, the main job, does what it reports."""

import numpy as np

from tensorstore.corpora import digits
from tensorstore.demo import run_demo


def test_demo_reports_a_bit_exact_deduplicated_family(tmp_path):
    lines = []
    figures = run_demo(tmp_path, out=lines.append)
    stats = figures["stats"]
    assert figures["bit_exact"] and figures["verify_ok"]
    assert stats["models"] == len(digits.FAMILY)
    # frozen layers are shared: the store holds far less than the models as added
    assert stats["unique_bytes"] < 0.75 * stats["logical_bytes"]
    shared = {r["model"]: r["shared_bytes"] for r in figures["sharing"]}
    assert shared["digits-full-shifted"] == 0 and shared["digits-head-noisy"] > 0
    assert all(a > 0.5 for a in figures["accuracy"].values())  # trained, not random (10 classes)
    assert any("bit-exact round trip: yes" in line for line in lines)
    # it says where its store is kept, and how to look at it
    assert str(tmp_path.resolve()) in lines[0]
    assert any(f"tensorstore ls {tmp_path / 'store'}" in line for line in lines)
    # the near-duplicate pass saved bytes and kept every model within its budget
    dedup = figures["dedup"]
    assert dedup["bytes_saved"] > 0 and dedup["accuracy_checked"]
    assert all(m["accuracy_after"] >= m["accuracy_before"] - dedup["max_accuracy_drop"] for m in dedup["models"])
    assert figures["repack"]["pages_after"] <= figures["repack"]["pages_before"]
    assert figures["cache"]["requests"] == 200 and figures["cache"]["hits"] > 0
    # a second process maps what the first assembled into the shared cache
    first, second = figures["shared_cache"]["first"], figures["shared_cache"]["second"]
    assert first["misses"] == first["mapped_tensors"] > 0
    assert second["misses"] == 0 and second["mapped_tensors"] == first["mapped_tensors"]


def test_frozen_layers_are_bit_identical_to_the_base():
    family = digits.build_family(digits.FAMILY[:2])
    base, head = family["digits-base"], family["digits-head-noisy"]
    assert all(np.array_equal(base[k], head[k]) for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"))
    assert not np.array_equal(base["head.weight"], head["head.weight"])

