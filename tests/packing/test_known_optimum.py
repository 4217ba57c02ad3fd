"""Small instances worked out by hand, where the best placement is known."""

from __future__ import annotations

import pytest

from tensorstore_packing import ALGORITHMS, PackingProblem, UnknownAlgorithmError, pack, pages_lower_bound
from tests.packing.helpers import check_result

B = 64  # block size in these examples; a page holds 16 blocks
PAGE = 16 * B


def shared_base() -> PackingProblem:
    """Two fine-tunes: 16 shared blocks (one full page) + one private block each."""
    sizes = {i: B for i in range(18)}
    return PackingProblem.from_tensors(
        {"a": list(range(16)) + [16], "b": list(range(16)) + [17]}, sizes, PAGE
    )


def test_shared_base_bounds():
    p = shared_base()
    result = pack(p, "two-stage")
    assert result.lower_bound_pages == 2  # 18 blocks, 16 per page
    assert result.tensor_lower_bound.tolist() == [2, 2]  # 17 blocks each


@pytest.mark.parametrize(
    ("algorithm", "pages"),
    [("baseline", 3), ("greedy-1", 3), ("greedy-2", 2), ("two-stage", 2)],
)
def test_shared_base_pages(algorithm, pages):
    # baseline: a's 17 blocks take pages 0-1, b's private block opens page 2;
    # greedy-1: the shared set's page, then one page per private block
    result = pack(shared_base(), algorithm)
    check_result(result)
    assert result.pages == pages
    assert result.tensor_pages_read.tolist() == [2, 2]  # optimal for everyone


def test_tiny_tensors_share_one_page_except_in_the_per_tensor_baseline():
    p = PackingProblem.from_tensors({f"bias{i}": [i] for i in range(4)}, [100] * 4, 1024)
    assert pack(p, "baseline").pages == 4
    assert pack(p, "greedy-1").pages == 4
    assert pack(p, "greedy-2").pages == 1
    assert pack(p, "two-stage").pages == 1


def test_two_stage_puts_a_tensors_two_leftovers_on_one_page():
    # t reads x and y, which have different sharing sets ({t,u} and {t,v}); both fit a
    # page, so the optimum is one page read by everyone
    p = PackingProblem.from_tensors({"t": [0, 1], "u": [0], "v": [1]}, [512, 512], 1024)
    result = pack(p, "two-stage")
    assert result.pages == 1
    assert result.tensor_pages_read.tolist() == [1, 1, 1]
    assert result.tensor_excess_bytes.tolist() == [0, 512, 512]
    assert result.status == "OPTIMAL"


def test_full_pages_and_offsets_are_exact():
    # 3 blocks of 512 aligned to 16 -> 2 pages; in-page offsets 0 and 512
    p = PackingProblem.from_tensors({"w": [0, 1, 2]}, [512, 512, 512], 1024)
    result = pack(p, "two-stage")
    assert result.pages == 2
    assert sorted(result.block_offset.tolist()) == [0, 0, 512]
    assert result.page_used_bytes.sum() == 1536


def test_alignment_is_paid_in_capacity():
    # 4 blocks of 250 bytes are 256-byte slots at alignment 16: exactly one 1024 page;
    # with 1020-byte pages they need two
    assert pack(PackingProblem.from_tensors({"w": [0, 1, 2, 3]}, [250] * 4, 1024)).pages == 1
    assert pack(PackingProblem.from_tensors({"w": [0, 1, 2, 3]}, [250] * 4, 1020)).pages == 2
    assert pack(PackingProblem.from_tensors({"w": [0, 1, 2, 3]}, [250] * 4, 1020, alignment=1)).pages == 1


def test_blocks_larger_than_half_a_page_raise_the_bound():
    assert pages_lower_bound([600, 600, 600], 1000) == 3  # volume alone says 2
    assert pages_lower_bound([100] * 25, 1000) == 3


def test_unread_blocks_are_still_placed():
    p = PackingProblem.from_tensors({"w": [0]}, [100, 100, 100], 1024)
    for algorithm in ALGORITHMS:
        result = pack(p, algorithm)
        check_result(result)


def test_unknown_algorithm_is_named():
    with pytest.raises(UnknownAlgorithmError, match="'greedy-3'.*two-stage"):
        pack(shared_base(), "greedy-3")
    with pytest.raises(ValueError, match="read_weight"):
        pack(shared_base(), read_weight=-1)


def test_result_look_ups_by_external_id():
    p = PackingProblem.from_tensors({"w": [100, 200]}, {100: 512, 200: 512}, 1024)
    result = pack(p, "greedy-2")
    assert result.page_of(100) == result.page_of(200) == 0
    assert {result.offset_of(100), result.offset_of(200)} == {0, 512}
    assert sorted(result.page_contents(0).tolist()) == [100, 200]
    with pytest.raises(ValueError, match="unknown block id 300"):
        result.page_of(300)


def test_model_reads_count_distinct_pages_of_the_models_tensors():
    p = shared_base()
    result = pack(p, "two-stage")
    reads = result.model_reads({"both": ["a", "b"], "only_a": ["a"]})
    assert reads.names == ("both", "only_a")
    assert reads.pages_read.tolist() == [2, 2]  # two-stage puts both private blocks together
    assert reads.lower_bound.tolist() == [2, 2]
