"""The contentrefs bench suite: both arms run on the same family and report exact bytes."""

from __future__ import annotations

from tensorstore.bench import contentrefs


def test_the_suite_compares_both_arms_on_one_family(tmp_path):
    (res,) = contentrefs.main(["digits"], str(tmp_path), repeat=2)
    on, off = res["content"], res["position_only"]
    # digits members keep their base's names and shapes: no block is looked up by content
    assert on["encoded_bytes"] == off["encoded_bytes"] and on["encodings"] == off["encodings"]
    assert 0 < on["encoded_bytes"] < res["logical_bytes"] and res["zipllm_bytes"] > 0
    assert len(res["load_average_1min"]) == 2
    assert not list(tmp_path.iterdir())  # the stores are removed
    table = contentrefs.table([res])
    assert table.count("\n") == 2 and "| digits |" in table


def test_the_scaling_suite_measures_lookups_in_stores_of_each_size(tmp_path):
    from tensorstore.bench import contentcodes

    res = contentcodes.run(str(tmp_path), repeat=1, sizes=(300, 1200))
    small, large = res["sizes"]
    assert (small["stored_blocks"], large["stored_blocks"]) == (300, 1200)
    for x in (small, large):
        # every block of the renamed fine-tune found its base block by content
        assert x["renamed_deltas"] == 256 and x["verify_ok"]
        assert x["backfill_blocks"] == x["stored_blocks"]  # the stripped store was coded again, whole
    assert large["entries_per_lookup"] > small["entries_per_lookup"]  # buckets fill as the class grows
    for layout in res["layouts"]:
        assert layout["found"] == 256  # queries 3 bits from a stored code: always within reach
    assert set(res["codes_cost"]["seconds"]) == set(contentcodes.ARMS)
    assert not list(tmp_path.iterdir())  # the stores are removed
    table = contentrefs.table([res])
    assert "| 1,200 |" in table and "4 pieces of 16 bits" in table
