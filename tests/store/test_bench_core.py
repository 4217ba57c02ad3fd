"""`tensorstore bench --suite core` on the digits corpus: its size figures hold at any speed."""

import pytest

from tensorstore.bench import core


@pytest.mark.parametrize("codec", ["raw", "auto"])
def test_core_bench_on_digits(tmp_path, codec):
    r = core.main("digits", 1, str(tmp_path), codec)
    s = r["summary"]
    assert r["codec"] == r["raw"]["codec"] == codec
    assert s["ten_copies_vs_one"] <= 1.05  # ten copies are stored once
    assert s["head_only_adds_fraction"] < 0.05
    for figure in ("ingest_new_vs_lmdb_raw", "load_speed_vs_safetensors", "ingest_present_GBps", "ingest_big_vs_empty",
                   "full_fine_tune_load_time_vs_safetensors"):
        assert s[figure] > 0
    assert r["raw"]["big_store_models"] == 10  # the digits run uses a smaller "big" store
    if codec == "raw":
        assert s["encoded_vs_model_bytes"] == 1.0 and s["full_fine_tune_delta_blocks_fraction"] == 0
    else:  # the fine-tune's moved weights are deltas of the base, and cost less than their size
        assert s["full_fine_tune_delta_blocks_fraction"] > 0.5 and s["full_fine_tune_adds_fraction"] < 1.0
