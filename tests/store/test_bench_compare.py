"""`tensorstore bench` (the compare suite) on the digits corpus: its figures are consistent."""

from tensorstore.bench import compare
from tensorstore.corpora import digits


def test_compare_on_digits(tmp_path):
    family = digits.build_family()
    budget = 0.01
    res = compare.run(family, digits.evaluate, tmp_path, page_size="64KiB", block_bytes="16KiB",
                      max_accuracy_drop=budget, tolerance=0.05, repeat=1, requests=300)
    alt = res["alternatives"]
    exact, near, tensors = alt["store-exact"], alt["store-neardup"], alt["tensor-dedup"]
    # the store keeps no more distinct data than whole-tensor dedup, and pages add little
    assert exact["unique_bytes"] <= tensors["bytes"]
    assert exact["bytes"] - exact["unique_bytes"] <= 0.06 * exact["unique_bytes"]
    assert exact["bit_exact"] and exact["verify_ok"] and near["verify_ok"]
    # near-dup: smaller, and every model within its budget
    assert near["bytes"] <= exact["bytes"] and near["unique_bytes"] <= exact["unique_bytes"]
    for name, acc in near["accuracy"].items():
        assert acc >= alt["safetensors"]["accuracy"][name] - budget - 1e-12
    # every file-based figure is in place and dedup beats one file per model
    assert tensors["bytes"] < alt["safetensors"]["bytes"] and alt["chunk-64k"]["bytes"] <= alt["safetensors"]["bytes"]
    for name in res["models"]:
        assert exact["pages_read"][name] >= exact["pages_read_lower_bound"][name]
    # no online policy beats the offline optimum
    for row in res["cache"]["by_capacity"]:
        assert all(row[p] <= row["belady"] + 1e-12 for p in ("lru", "arc", "s3fifo", "queueing"))
    assert "| store-neardup |" in compare.table(res)


def test_lsh_recall_against_brute_force_on_digits(tmp_path):
    import tensorstore as ts
    from tensorstore.bench.neardup import measure

    with ts.open(tmp_path / "s", "w", page_size="256KiB", block_bytes="16KiB") as s:
        for name, tensors in digits.build_family().items():
            s.add_model(name, tensors)
    r = measure(tmp_path / "s", 0.05)
    assert r["found_by_exhaustive"] > 10
    assert r["found_by_lsh"] <= r["found_by_exhaustive"]  # what the LSH finds is within tolerance
    assert r["recall"] >= 0.95


def test_packing_suite_on_digits(tmp_path):
    from tensorstore.bench import packing_suite

    rows = {r["algorithm"]: r for r in packing_suite.main("digits", str(tmp_path), time_limit=2.0)}
    assert set(rows) == {"baseline", "greedy-1", "greedy-2", "two-stage"}
    for r in rows.values():
        assert r["pages"] >= r["lower_bound_pages"] and r["tensor_reads_over_bound"] >= 1.0
        assert r["model_pages_read_mean"] >= r["model_pages_read_bound_mean"]
    assert rows["two-stage"]["pages"] <= min(rows["greedy-2"]["pages"], rows["baseline"]["pages"])
