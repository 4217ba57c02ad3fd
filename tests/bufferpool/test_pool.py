"""BufferPool: correctness under eviction, pinning, errors, counters."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensorstore_bufferpool import (
    POLICIES,
    BufferPool,
    PagePinnedError,
    PageTooLargeError,
    PoolExhaustedError,
    UnknownPolicyError,
)

PAGE = 256


def content(page_id: int) -> bytes:
    """Distinct, length-varying bytes for each page id (never more than PAGE)."""
    length = 1 + (page_id * 37) % PAGE
    return bytes((page_id * 7 + i) % 251 for i in range(length))


class CountingLoad:
    def __init__(self) -> None:
        self.calls: dict[int, int] = {}

    def __call__(self, page_id: int) -> bytes:
        self.calls[page_id] = self.calls.get(page_id, 0) + 1
        return content(page_id)


@pytest.mark.parametrize("policy", POLICIES)
@given(accesses=st.lists(st.integers(0, 40), max_size=200))
def test_every_pin_returns_what_load_returned_for_that_page(policy, accesses):
    pool = BufferPool(6 * PAGE, PAGE, content, policy=policy)
    for page_id in accesses:
        with pool.pin(page_id) as frame:
            assert frame.tobytes() == content(page_id)
        assert len(pool) <= 6


def test_frames_are_read_only_views():
    pool = BufferPool(2 * PAGE, PAGE, content)
    with pool.pin(3) as frame:
        assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8
        assert len(frame) == len(content(3))
        with pytest.raises(ValueError, match="read-only"):
            frame[0] = 1
        with pytest.raises(ValueError):
            frame.flags.writeable = True
    with pool.pin(3) as frame:
        assert frame.tobytes() == content(3)


def test_a_pinned_page_is_never_evicted_while_others_cycle():
    load = CountingLoad()
    pool = BufferPool(3 * PAGE, PAGE, load, policy="lru")
    with pool.pin(0) as held:
        for page_id in range(1, 50):
            with pool.pin(page_id) as frame:
                assert frame.tobytes() == content(page_id)
            assert 0 in pool
        assert held.tobytes() == content(0)
    assert load.calls[0] == 1


def test_all_frames_pinned_raises_pool_exhausted():
    pool = BufferPool(2 * PAGE, PAGE, content)
    with pool.pin(1), pool.pin(2):
        with pytest.raises(PoolExhaustedError, match="page 3") as info:
            with pool.pin(3):
                pass
        assert isinstance(info.value, RuntimeError)
        assert 3 not in pool
    with pool.pin(3) as frame:  # fine once pins are released
        assert frame.tobytes() == content(3)


def test_invalidate_drops_an_unpinned_page_and_refuses_a_pinned_one():
    version = {7: b"old"}
    pool = BufferPool(4 * PAGE, PAGE, lambda page_id: version[page_id])
    with pool.pin(7) as frame:
        assert frame.tobytes() == b"old"
        with pytest.raises(PagePinnedError):
            pool.invalidate(7)
    version[7] = b"new content"
    assert pool.invalidate(7) is True
    assert pool.invalidate(7) is False  # no longer resident
    with pool.pin(7) as frame:
        assert frame.tobytes() == b"new content"


def test_clear_drops_everything_or_nothing():
    pool = BufferPool(4 * PAGE, PAGE, content)
    for page_id in range(4):
        with pool.pin(page_id):
            pass
    with pool.pin(0):
        with pytest.raises(PagePinnedError):
            pool.clear()
        assert len(pool) == 4
    assert pool.clear() == 4
    assert len(pool) == 0 and 0 not in pool


def test_stats_count_hits_misses_evictions_and_bytes():
    pool = BufferPool(2 * PAGE, PAGE, content, policy="lru")
    for page_id in [1, 2, 1, 3, 1, 2]:  # misses: 1, 2, 3 (evicts 2), 2 (evicts 3)
        with pool.pin(page_id):
            pass
    pool.note_request("m")
    stats = pool.stats()
    assert (stats.hits, stats.misses, stats.evictions, stats.requests) == (2, 4, 2, 1)
    assert stats.bytes_loaded == sum(len(content(p)) for p in [1, 2, 3, 2])
    assert stats.hit_ratio == pytest.approx(2 / 6)
    assert stats.to_dict()["hit_ratio"] == pytest.approx(2 / 6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.hits = 0  # type: ignore[misc]
    pool.reset_stats()
    assert pool.stats().to_dict()["misses"] == 0


def test_size_properties():
    pool = BufferPool(10 * PAGE + 17, PAGE, content)
    assert pool.n_frames == 10
    assert pool.capacity_bytes == 10 * PAGE
    assert pool.page_bytes == PAGE
    assert pool.policy == "queueing"


def test_a_page_larger_than_a_frame_is_rejected_and_leaves_the_pool_usable():
    pool = BufferPool(2 * PAGE, PAGE, lambda page_id: b"x" * (PAGE + page_id))
    with pytest.raises(PageTooLargeError, match="257 bytes") as info:
        with pool.pin(1):
            pass
    assert isinstance(info.value, ValueError)
    assert 1 not in pool and len(pool) == 0
    with pool.pin(0) as frame:
        assert len(frame) == PAGE


def test_load_must_return_bytes_like():
    pool = BufferPool(2 * PAGE, PAGE, lambda page_id: "text")
    with pytest.raises(TypeError, match="bytes-like"):
        with pool.pin(1):
            pass


def test_numpy_arrays_from_load_are_stored_as_their_bytes():
    array = np.arange(10, dtype=np.float32)
    pool = BufferPool(2 * PAGE, PAGE, lambda page_id: array)
    with pool.pin(0) as frame:
        assert np.array_equal(frame.view(np.float32), array)


def test_a_failing_load_propagates_and_the_page_can_be_loaded_later():
    attempts = []

    def flaky(page_id: int) -> bytes:
        attempts.append(page_id)
        if len(attempts) == 1:
            raise OSError("disk hiccup")
        return b"ok"

    pool = BufferPool(2 * PAGE, PAGE, flaky)
    with pytest.raises(OSError, match="hiccup"):
        with pool.pin(5):
            pass
    assert 5 not in pool and len(pool) == 0
    with pool.pin(5) as frame:
        assert frame.tobytes() == b"ok"


def test_the_queueing_policy_keeps_the_page_shared_by_popular_models():
    pool = BufferPool(3 * PAGE, PAGE, content)  # default policy: queueing
    pool.set_sharing({0: ["a", "b", "c"], 1: ["a"], 2: ["b"], 3: ["c"], 4: ["c"]})
    for model, pages in [("a", [0, 1]), ("b", [0, 2]), ("c", [0, 3, 4]), ("a", [0, 1]), ("c", [0, 3, 4])]:
        pool.note_request(model)
        for page_id in pages:
            with pool.pin(page_id):
                pass
        assert 0 in pool


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((PAGE - 1, PAGE, content), ValueError, "smaller than one page"),
        ((0, PAGE, content), ValueError, "capacity_bytes"),
        ((PAGE, 0, content), ValueError, "page_bytes"),
        ((PAGE, PAGE, "not callable"), TypeError, "load must be callable"),
        ((2.5, PAGE, content), TypeError, "capacity_bytes"),
    ],
)
def test_bad_constructor_arguments(args, error, match):
    with pytest.raises(error, match=match):
        BufferPool(*args)


def test_unknown_policy_names_the_valid_ones():
    with pytest.raises(UnknownPolicyError, match="valid policies: queueing, lru"):
        BufferPool(2 * PAGE, PAGE, content, policy="fifo")


def test_policy_options_reach_the_policy():
    BufferPool(2 * PAGE, PAGE, content, half_life=50.0)
    with pytest.raises(TypeError, match="half_life"):
        BufferPool(2 * PAGE, PAGE, content, policy="lru", half_life=50.0)


def test_page_ids_must_be_integers():
    pool = BufferPool(2 * PAGE, PAGE, content)
    with pytest.raises(TypeError, match="page_id"):
        pool.pin("7")
    with pool.pin(np.int64(7)) as frame:  # numpy integers are fine
        assert frame.tobytes() == content(7)


def test_sharing_map_is_validated():
    pool = BufferPool(2 * PAGE, PAGE, content)
    with pytest.raises(TypeError, match="mapping"):
        pool.set_sharing([(1, ["a"])])
    with pytest.raises(TypeError, match="collection of model names"):
        pool.set_sharing({1: "a"})


def test_load_into_writes_straight_into_the_frame():
    def load_into(page_id: int, frame: memoryview) -> int:
        data = content(page_id)
        assert len(frame) == PAGE and not frame.readonly
        frame[: len(data)] = data
        return len(data)

    pool = BufferPool(3 * PAGE, PAGE, None, load_into=load_into)
    for page_id in [1, 2, 3, 4, 1]:
        with pool.pin(page_id) as frame:
            assert frame.tobytes() == content(page_id)
    assert pool.stats().bytes_loaded == sum(len(content(p)) for p in [1, 2, 3, 4, 1])


def test_a_load_into_that_releases_its_frame_does_not_break_later_loads():
    """The pool keeps one buffer per frame; a loader may release what it was given."""
    def load_into(page_id: int, frame: memoryview) -> int:
        data = content(page_id)
        with frame:  # releases the memoryview on exit
            frame[: len(data)] = data
        return len(data)

    pool = BufferPool(2 * PAGE, PAGE, None, load_into=load_into)
    for page_id in [1, 2, 3, 4, 5, 1]:  # every frame is loaded three times
        with pool.pin(page_id) as frame:
            assert frame.tobytes() == content(page_id)
    assert pool.stats().misses == 6


def test_a_reloaded_frame_serves_its_new_page_and_the_old_one_comes_back_intact():
    """An evicted page's record is reused for the page loaded into its frame."""
    pool = BufferPool(PAGE, PAGE, content)
    for page_id in [1, 2, 1, 2]:
        with pool.pin(page_id) as frame:
            assert frame.tobytes() == content(page_id)
            assert page_id in pool and len(pool) == 1
    assert pool.stats().to_dict()["evictions"] == 3
    with pool.pin(2), pytest.raises(RuntimeError):
        with pool.pin(3):  # the only frame is pinned
            pass
    with pool.pin(3) as frame:  # and after a failed reservation, the next one works
        assert frame.tobytes() == content(3)


@pytest.mark.parametrize(("reported", "error"), [(PAGE + 1, PageTooLargeError), ("7", TypeError), (-1, ValueError)])
def test_load_into_must_report_a_byte_count_that_fits(reported, error):
    pool = BufferPool(2 * PAGE, PAGE, None, load_into=lambda page_id, frame: reported)
    with pytest.raises(error):
        with pool.pin(1):
            pass
    assert len(pool) == 0


def test_a_loader_is_required():
    with pytest.raises(TypeError, match="load must be callable"):
        BufferPool(2 * PAGE, PAGE, None)


def test_a_replacer_instance_must_match_the_frame_count():
    from tensorstore_bufferpool import make_replacer

    pool = BufferPool(4 * PAGE, PAGE, content, policy=make_replacer("arc", 4))
    assert pool.policy == "arc"
    with pytest.raises(ValueError, match="capacity 3"):
        BufferPool(4 * PAGE, PAGE, content, policy=make_replacer("arc", 3))
    with pytest.raises(ValueError, match="policy name"):
        BufferPool(4 * PAGE, PAGE, content, policy=make_replacer("arc", 4), small_fraction=0.2)
