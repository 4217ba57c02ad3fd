"""BufferPool under threads: loads happen once, outside the lock, and pins are honoured."""

from __future__ import annotations

import random
import threading
import time

import pytest

from tensorstore_bufferpool import POLICIES, BufferPool

PAGE = 512


def content(page_id: int) -> bytes:
    length = 1 + (page_id * 61) % PAGE
    return bytes((page_id * 13 + i) % 251 for i in range(length))


def run_threads(n: int, target) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrapped(index: int) -> None:
        try:
            target(index)
        except BaseException as exc:  # collected and asserted on by the caller
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    return errors


def test_concurrent_requests_for_one_page_load_it_once():
    calls: list[int] = []
    calls_lock = threading.Lock()

    def slow_load(page_id: int) -> bytes:
        with calls_lock:
            calls.append(page_id)
        time.sleep(0.05)
        return content(page_id)

    pool = BufferPool(4 * PAGE, PAGE, slow_load)
    barrier = threading.Barrier(8)

    def reader(_: int) -> None:
        barrier.wait()
        with pool.pin(42) as frame:
            assert frame.tobytes() == content(42)

    assert run_threads(8, reader) == []
    assert calls == [42]
    stats = pool.stats()
    assert (stats.misses, stats.hits) == (1, 7)
    assert stats.load_waits >= 1


def test_a_slow_load_does_not_block_hits_on_other_pages():
    release = threading.Event()
    started = threading.Event()

    def load(page_id: int) -> bytes:
        if page_id == 1:
            started.set()
            assert release.wait(10)
        return content(page_id)

    pool = BufferPool(4 * PAGE, PAGE, load)
    with pool.pin(2):
        pass
    loader = threading.Thread(target=lambda: pool.pin(1).__enter__())
    loader.start()
    try:
        assert started.wait(10)
        begun = time.perf_counter()
        with pool.pin(2) as frame:  # a hit while page 1 is still loading
            assert frame.tobytes() == content(2)
        assert time.perf_counter() - begun < 1.0
        assert 1 not in pool  # still loading
    finally:
        release.set()
        loader.join(10)
    assert 1 in pool


@pytest.mark.parametrize("policy", POLICIES)
def test_eight_threads_on_a_pool_smaller_than_the_working_set(policy):
    """No pinned page is evicted and every read has the right bytes for its page id."""
    pool = BufferPool(24 * PAGE, PAGE, content, policy=policy)
    pool.set_sharing({page: [f"m{page % 5}"] for page in range(64)})

    def worker(index: int) -> None:
        rng = random.Random(index)
        for _ in range(400):
            pool.note_request(f"m{rng.randrange(5)}")
            first, second = rng.randrange(64), rng.randrange(64)
            with pool.pin(first) as a:
                assert a.tobytes() == content(first)
                with pool.pin(second) as b:
                    assert b.tobytes() == content(second)
                    assert first in pool and second in pool
                time.sleep(0)  # let other threads evict around us
                # still ours: the frame was not reused while pinned
                assert a.tobytes() == content(first)

    assert run_threads(8, worker) == []
    stats = pool.stats()
    assert stats.hits + stats.misses == 8 * 400 * 2
    assert stats.evictions > 0  # the working set (64 pages) did not fit in 24 frames
    assert len(pool) <= 24
