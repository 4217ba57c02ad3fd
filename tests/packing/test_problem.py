"""Building a PackingProblem: normalisation, look-ups and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from tensorstore_packing import (
    BlockTooLargeError,
    InvalidProblemError,
    PackingProblem,
    ProblemTypeError,
    UnknownBlockError,
    UnknownTensorError,
)


def test_from_tensors_builds_csr_and_keeps_tensor_order():
    p = PackingProblem.from_tensors(
        {"w": [30, 10, 20], "b": [20]}, {10: 100, 20: 50, 30: 7}, page_bytes=1024
    )
    assert p.block_ids.tolist() == [10, 20, 30]  # dense order = sorted ids
    assert p.block_bytes.tolist() == [100, 50, 7]
    assert p.slot_bytes.tolist() == [112, 64, 16]  # rounded up to 16
    assert p.tensor_names == ("w", "b")
    assert p.tensor_blocks_of(0).tolist() == [2, 0, 1]
    assert p.tensor_blocks_of(1).tolist() == [1]
    assert p.tensor_weights.tolist() == [1.0, 1.0]
    assert p.n_refs == 4


def test_repeated_block_in_a_tensor_counts_once():
    p = PackingProblem.from_tensors({"z": [1, 1, 2, 1]}, {1: 8, 2: 8}, page_bytes=64)
    assert p.tensor_blocks_of(0).tolist() == [0, 1]


def test_array_block_sizes_mean_id_is_index_and_weights_default_to_one():
    p = PackingProblem.from_tensors(
        {"a": [0, 2], "b": [1]}, np.array([5, 6, 7]), page_bytes=64, weights={"b": 2.5}
    )
    assert p.block_ids.tolist() == [0, 1, 2]
    assert p.tensor_weights.tolist() == [1.0, 2.5]


def test_from_arrays_matches_from_tensors():
    a = PackingProblem.from_tensors({"x": [0, 1], "y": [1, 2]}, [10, 20, 30], page_bytes=128)
    b = PackingProblem.from_arrays([10, 20, 30], [0, 2, 4], [0, 1, 1, 2], 128, tensor_names=["x", "y"])
    for field in ("block_ids", "block_bytes", "tensor_ptr", "tensor_blocks", "tensor_weights", "slot_bytes"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field


def test_models_by_name_and_lookups():
    p = PackingProblem.from_tensors(
        {"a": [1], "b": [2]}, {1: 4, 2: 4}, 64, models={"m": ["b", "a", "b"]}
    )
    assert p.model_names == ("m",)
    assert p.model_tensors_of(0).tolist() == [1, 0]  # repeats dropped
    assert p.block_index([2, 1]).tolist() == [1, 0]
    assert p.tensor_index("b") == 1
    with pytest.raises(UnknownBlockError, match="99"):
        p.block_index(99)
    with pytest.raises(UnknownTensorError, match="nope"):
        p.tensor_index("nope")


def test_arrays_are_read_only():
    p = PackingProblem.from_tensors({"a": [0]}, [4], 64)
    with pytest.raises(ValueError):
        p.block_bytes[0] = 1


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(tensors={"a": [1]}, block_sizes={1: 2000}, page_bytes=1024), BlockTooLargeError, "block 1 of 2000 bytes"),
        (dict(tensors={"a": [1]}, block_sizes={1: 1020}, page_bytes=1022), BlockTooLargeError, "1024 aligned to 16"),
        (dict(tensors={"a": [1]}, block_sizes={1: -5}, page_bytes=1024), InvalidProblemError, "block 1 has size -5"),
        (dict(tensors={"a": [1]}, block_sizes={1: 0}, page_bytes=1024), InvalidProblemError, "positive"),
        (dict(tensors={"a": [7]}, block_sizes={1: 5}, page_bytes=1024), UnknownBlockError, "tensor 'a' lists block id 7"),
        (dict(tensors={"a": [1]}, block_sizes={1: 5}, page_bytes=0), InvalidProblemError, "page_bytes must be positive"),
        (dict(tensors={"a": [1]}, block_sizes={1: 5}, page_bytes=-1), InvalidProblemError, "page_bytes"),
        (dict(tensors={"a": [1]}, block_sizes={1: 5}, page_bytes=64.0), ProblemTypeError, "page_bytes must be an int"),
        (dict(tensors={"a": [1]}, block_sizes={1: 5.5}, page_bytes=64), ProblemTypeError, "block sizes must be integers"),
        (dict(tensors={"a": [1.0]}, block_sizes={1: 5}, page_bytes=64), ProblemTypeError, "tensor 'a'"),
        (dict(tensors=[[1]], block_sizes={1: 5}, page_bytes=64), ProblemTypeError, "mapping"),
        (dict(tensors={"a": [1]}, block_sizes={1: 5}, page_bytes=64, weights={"zz": 1.0}), UnknownTensorError, "zz"),
        (dict(tensors={"a": [1]}, block_sizes={1: 5}, page_bytes=64, weights={"a": -1.0}), InvalidProblemError, "weights"),
        (dict(tensors={"a": [1]}, block_sizes={1: 5}, page_bytes=64, models={"m": ["q"]}), UnknownTensorError, "'q'"),
        (dict(tensors={"a": [1]}, block_sizes={1: 5}, page_bytes=64, alignment=3), InvalidProblemError, "power of two"),
    ],
)
def test_bad_input_raises_a_clear_error(kwargs, error, message):
    with pytest.raises(error, match=message):
        PackingProblem.from_tensors(**kwargs)


def test_errors_are_builtin_value_and_type_errors():
    with pytest.raises(ValueError):
        PackingProblem.from_tensors({"a": [1]}, {1: 5}, 0)
    with pytest.raises(TypeError):
        PackingProblem.from_tensors({"a": [1]}, {1: 5}, "1MiB")


def test_constructor_rejects_unnormalised_arrays():
    with pytest.raises(InvalidProblemError, match="strictly increasing"):
        PackingProblem(
            block_ids=np.array([2, 1]), block_bytes=np.array([4, 4]), tensor_names=(),
            tensor_ptr=np.array([0]), tensor_blocks=np.array([], dtype=np.int64),
            tensor_weights=np.array([]), page_bytes=64,
        )
    with pytest.raises(InvalidProblemError, match="twice"):
        PackingProblem(
            block_ids=np.array([1]), block_bytes=np.array([4]), tensor_names=("a",),
            tensor_ptr=np.array([0, 2]), tensor_blocks=np.array([0, 0]),
            tensor_weights=np.array([1.0]), page_bytes=64,
        )


def test_empty_problem_is_allowed():
    p = PackingProblem.from_tensors({}, {}, 64)
    assert p.n_blocks == 0 and p.n_tensors == 0
