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
