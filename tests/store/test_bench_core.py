"""`tensorstore bench --suite core` on the digits corpus: its size figures hold at any speed."""

from tensorstore.bench import core


def test_core_bench_on_digits(tmp_path):
    r = core.main("digits", 1, str(tmp_path))
    s = r["summary"]
    assert s["ten_copies_vs_one"] <= 1.05  # ten copies are stored once
    assert s["head_only_adds_fraction"] < 0.05
    for figure in ("ingest_new_vs_lmdb_raw", "load_speed_vs_safetensors", "ingest_present_GBps", "ingest_big_vs_empty"):
        assert s[figure] > 0
    assert r["raw"]["big_store_models"] == 10  # the digits run uses a smaller "big" store
