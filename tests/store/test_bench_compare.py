"""`tensorstore bench` (the compare suite) on the digits corpus: its figures are consistent."""

from tensorstore.bench import compare
from tensorstore.corpora import digits, registry


def _check_baselines(res: dict) -> None:
    """What must hold between the alternatives by construction, and every round trip."""
    alt = res["alternatives"]
    files, tensors, zipllm = alt["safetensors"], alt["tensor-dedup"], alt["zipllm-style"]
    distinct = tensors["distinct_tensors"]
    # measured, not assumed: every lossless alternative decoded back to the same bits
    for key, a in alt.items():
        if key != "store-neardup":
            assert a["bit_exact"] is True, key
    # dedup keeps no more than it was given; chunks of files no more than the files
    assert tensors["bytes"] <= res["logical_bytes"] and alt["chunk-64k"]["bytes"] <= files["bytes"]
    # ZipLLM-style keeps the same distinct tensors, each encoded: a plane that does not shrink
    # is stored raw, so a tensor costs at most its bytes plus a header of a few bytes per plane (8 planes at most)
    assert zipllm["bytes"] <= tensors["bytes"] + distinct * 64
    assert zipllm["delta_tensors"] + zipllm["packed_tensors"] == distinct
    if "zipnn+tensor-dedup" in alt:
        assert alt["zipnn+tensor-dedup"]["bit_exact"] and alt["zipnn"]["bit_exact"]
    else:
        assert "zipnn" in res["left_out"]
    # the store keeps no more distinct data than whole-tensor dedup
    assert alt["store-exact"]["unique_bytes"] <= tensors["bytes"]
    # encoding changes how distinct blocks are kept, not which: a block stays raw unless an
    # encoding is smaller
    enc = alt["store-encoded"]
    assert enc["unique_bytes"] == alt["store-exact"]["unique_bytes"]
    assert enc["encoded_bytes"] <= enc["unique_bytes"] and enc["bytes"] == enc["encoded_bytes"]
    assert enc["verify_ok"] and set(enc["encodings"]) <= {"raw", "packed", "delta"}
    assert alt["store-exact"]["encodings"].get("raw", 0) == sum(alt["store-exact"]["encodings"].values())
    for name in res["models"]:
        assert enc["pages_read"][name] >= enc["pages_read_lower_bound"][name]
    assert "| zipllm-style (reimplementation) |" in compare.table(res)


def test_compare_on_digits(tmp_path):
    corpus = registry.load("digits")
    budget = 0.01
    res = compare.run(corpus.family, corpus.evaluate, tmp_path, parents=corpus.parents, page_size="64KiB",
                      block_bytes="16KiB", max_accuracy_drop=budget, tolerance=0.05, repeat=1, requests=300)
    _check_baselines(res)
    alt = res["alternatives"]
    exact, near, tensors = alt["store-exact"], alt["store-neardup"], alt["tensor-dedup"]
    # pages add little
    assert exact["bytes"] - exact["unique_bytes"] <= 0.06 * exact["unique_bytes"]
    assert exact["bit_exact"] and exact["verify_ok"] and near["verify_ok"]
    # near-dup (on the encoded store): smaller, and every model within its budget
    assert near["on"] == "store-encoded"
    assert near["encoded_bytes"] <= alt["store-encoded"]["encoded_bytes"] and near["unique_bytes"] <= exact["unique_bytes"]
    for name, acc in near["accuracy"].items():
        assert acc >= alt["safetensors"]["accuracy"][name] - budget - 1e-12
    # every file-based figure is in place and dedup beats one file per model
    assert tensors["bytes"] < alt["safetensors"]["bytes"] and alt["chunk-64k"]["bytes"] <= alt["safetensors"]["bytes"]
    # fine-tunes whose frozen layers are shared exactly: dedup then XOR-with-base beats dedup alone
    assert alt["zipllm-style"]["bytes"] < tensors["bytes"] and alt["zipllm-style"]["delta_tensors"] > 0
    for name in res["models"]:
        assert exact["pages_read"][name] >= exact["pages_read_lower_bound"][name]
    # no online policy beats the offline optimum
    for row in res["cache"]["by_capacity"]:
        assert all(row[p] <= row["belady"] + 1e-12 for p in ("lru", "arc", "s3fifo", "queueing"))
    assert "| store-neardup |" in compare.table(res)


def test_compare_on_the_quick_embedding_family(tmp_path):
    corpus = registry.load("embedding-quick")
    res = compare.run(corpus.family, corpus.evaluate, tmp_path, parents=corpus.parents, page_size=corpus.page_size,
                      block_bytes=corpus.block_bytes, max_accuracy_drop=0.01, tolerance=0.05, repeat=1, requests=200)
    _check_baselines(res)
    alt = res["alternatives"]
    # each fine-tune changed at most an eighth of its parent's rows: XOR with the parent leaves
    # mostly zero bytes, far below whole-tensor dedup (no table is shared whole)
    assert alt["zipllm-style"]["bytes"] < 0.5 * alt["tensor-dedup"]["bytes"]
    # every fine-tune's table has a parent table of its shape but the one that appended rows
    grown = {n for n in corpus.family if corpus.parents[n] and
             corpus.family[n]["embeddings.word_embeddings.weight"].shape
             != corpus.family[corpus.parents[n]]["embeddings.word_embeddings.weight"].shape}
    assert grown and len(grown) < len(corpus.family) - 1
    assert res["parents"] == corpus.parents


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
    assert set(rows) == {"as ingested", "baseline", "greedy-1", "greedy-2", "two-stage"}
    for r in rows.values():
        assert r["pages"] >= r["lower_bound_pages"] and r["tensor_reads_over_bound"] >= 1.0
        assert r["model_pages_read_mean"] >= r["model_pages_read_bound_mean"]
    assert rows["two-stage"]["pages"] <= min(rows["greedy-2"]["pages"], rows["baseline"]["pages"])


def test_bench_suites_take_the_embedding_corpus_by_name(tmp_path, capsys):
    import json

    from tensorstore import cli

    assert cli.main(["bench", "--suite", "packing", "--corpus", "embedding-quick", "--workdir", str(tmp_path), "--json"]) == 0
    rows = {r["algorithm"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["two-stage"]["pages"] >= rows["two-stage"]["lower_bound_pages"] > 0
    assert cli.main(["bench", "--suite", "chunking", "--corpus", "embedding-quick", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    # a name that is neither a corpus nor a folder: one line naming the corpora, exit 1
    assert cli.main(["bench", "--suite", "compare", "--corpus", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert "unknown corpus" in err and "embedding" in err and len(err.strip().splitlines()) == 1


def test_lossless_only_skips_the_evaluator(tmp_path):
    corpus = registry.load("embedding-quick")

    def evaluate(name, tensors):
        raise AssertionError("the lossless rows need no evaluator")

    res = compare.run(corpus.family, evaluate, tmp_path, parents=corpus.parents, page_size=corpus.page_size,
                      block_bytes=corpus.block_bytes, repeat=1, lossless_only=True)
    _check_baselines(res)
    assert "store-neardup" not in res["alternatives"] and "cache" not in res
    assert "lossless rows only" in compare.table(res)
