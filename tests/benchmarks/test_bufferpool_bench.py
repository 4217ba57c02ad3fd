"""Buffer-pool microbenchmarks (pytest-benchmark).

CI runs each once with ``--benchmark-disable`` (asserting the results are right); for
figures run ``pytest tests/benchmarks/test_bufferpool_bench.py --benchmark-enable``.
Targets (issue 5): a hit costs <= 5 µs; a miss costs the page read plus <= 10%.
The page read is ``os.pread`` of one 1 MiB page (the store's default page size) from a file
in the OS page cache; the figures are in docs/bufferpool.md.
"""

from __future__ import annotations

import itertools
import os
import statistics
import time

import numpy as np
import pytest

from tensorstore_bufferpool import POLICIES, BufferPool

PAGE = 1 << 20
N_PAGES = 16


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    """N_PAGES pages of distinct random bytes in one file, read once so it is cached."""
    path = tmp_path_factory.mktemp("pages") / "pages.bin"
    data = np.random.default_rng(0).integers(0, 256, N_PAGES * PAGE, dtype=np.uint8)
    path.write_bytes(data.tobytes())
    fd = os.open(path, os.O_RDONLY)
    for page in range(N_PAGES):
        os.pread(fd, PAGE, page * PAGE)
    yield fd, data.reshape(N_PAGES, PAGE)
    os.close(fd)


@pytest.mark.parametrize("policy", POLICIES)
def test_hit(benchmark, page_file, policy):
    fd, pages = page_file
    pool = BufferPool(4 * PAGE, PAGE, lambda p: os.pread(fd, PAGE, p * PAGE), policy=policy)
    pool.set_sharing({p: ["m"] for p in range(N_PAGES)})
    pool.note_request("m")
    with pool.pin(3):
        pass

    def hit() -> int:
        with pool.pin(3) as frame:
            return int(frame[0])

    assert benchmark(hit) == pages[3, 0]
    stats = pool.stats()
    assert stats.misses == 1 and stats.hits >= 1


def test_bare_page_read(benchmark, page_file):
    """Baseline for a miss: reading one page into a new bytes object, without a pool."""
    fd, pages = page_file
    order = itertools.cycle(range(N_PAGES))
    data = benchmark(lambda: os.pread(fd, PAGE, next(order) * PAGE))
    assert len(data) == PAGE


def test_bare_read_into_frames(benchmark, page_file):
    """Baseline for a zero-copy miss: ``preadv`` into 4 rotating 1 MiB buffers (the pool's
    arena size), so that destination-cache effects are the same as in the pool."""
    fd, pages = page_file
    arena = memoryview(np.zeros(4 * PAGE, dtype=np.uint8))
    order = itertools.cycle(range(N_PAGES))

    def read() -> int:
        page = next(order)
        frame = page % 4
        return page if os.preadv(fd, [arena[frame * PAGE : (frame + 1) * PAGE]], page * PAGE) == PAGE else -1

    page = benchmark(read)
    frame = page % 4
    assert arena[frame * PAGE : frame * PAGE + 64].tobytes() == pages[page, :64].tobytes()


def _miss_pool(fd: int, zero_copy: bool, policy: str, read_times: list[float] | None = None) -> BufferPool:
    """A 4-frame pool (the tests read it round-robin over 16 pages). With ``read_times``,
    the time spent inside each ``load``/``load_into`` call (the page read) is appended."""
    clock = time.perf_counter

    def load_into(page: int, frame: memoryview) -> int:
        start = clock()
        nbytes = os.preadv(fd, [frame], page * PAGE)
        if read_times is not None:
            read_times.append(clock() - start)
        return nbytes

    def load(page: int) -> bytes:
        start = clock()
        data = os.pread(fd, PAGE, page * PAGE)
        if read_times is not None:
            read_times.append(clock() - start)
        return data

    if zero_copy:
        return BufferPool(4 * PAGE, PAGE, None, policy=policy, load_into=load_into)
    return BufferPool(4 * PAGE, PAGE, load, policy=policy)


PAGES_PER_MODEL = 4


@pytest.mark.parametrize("policy", ["queueing", "lru"])
@pytest.mark.parametrize("zero_copy", [False, True], ids=["load", "load_into"])
def test_miss(benchmark, page_file, zero_copy, policy):
    """One pin of a page that is not resident: the miss the target is about.

    Four models of four pages each, requested round-robin, in a pool of four frames. The
    untimed setup replays the requests — ``note_request`` once per request, as the store
    does, and the pins of pages that are resident (the queueing policy keeps some) — up
    to the next page that is not resident; only that pin is timed. The read itself is timed
    inside ``load``/``load_into``, so the pool's overhead is measured per miss, in the same
    cache state as the read (policies reuse frames differently, which changes how fast the
    read into a frame is). ``test_note_request`` times ``note_request``, and
    ``test_request_and_miss`` both with one page per request."""
    fd, pages = page_file
    read_times: list[float] = []
    pool = _miss_pool(fd, zero_copy, policy, read_times)
    models = {f"m{i}": list(range(i * PAGES_PER_MODEL, (i + 1) * PAGES_PER_MODEL))
              for i in range(N_PAGES // PAGES_PER_MODEL)}
    pool.set_sharing({p: [m] for m, ps in models.items() for p in ps})
    reads = itertools.cycle([(m, p) for m, ps in models.items() for p in ps])

    def setup() -> tuple[tuple[int], dict]:
        while True:
            model, page = next(reads)
            if page % PAGES_PER_MODEL == 0:
                pool.note_request(model)
            if page not in pool:
                return (page,), {}
            with pool.pin(page):  # a hit: part of the request, not of the measurement
                pass

    def miss(page: int) -> tuple[int, int]:
        with pool.pin(page) as frame:
            return page, int(frame[-1])  # (reading more would time the reader, not the pool)

    page, last = benchmark.pedantic(miss, setup=setup, rounds=4000, warmup_rounds=100)
    assert last == pages[page, -1]
    for page in range(N_PAGES):  # untimed: every resident page holds its content
        if page in pool:
            with pool.pin(page) as frame:
                assert frame[:: PAGE // 64].tobytes() == pages[page, :: PAGE // 64].tobytes()
    stats = pool.stats()
    assert stats.misses == len(read_times)  # every timed pin missed and read its page once
    assert stats.evictions == stats.misses - min(stats.misses, 4)
    if benchmark.stats is not None:  # per miss: pin time minus read time
        totals = benchmark.stats.stats.data
        reads_timed = read_times[-len(totals):]
        overhead = statistics.median(t - r for t, r in zip(totals, reads_timed))
        read = statistics.median(reads_timed)
        benchmark.extra_info.update(
            read_us=read * 1e6, overhead_us=overhead * 1e6, overhead_share=overhead / read
        )
        print(f"\n{policy} {'load_into' if zero_copy else 'load'}: read {read * 1e6:.1f} us, "
              f"pool overhead {overhead * 1e6:.1f} us per miss = {overhead / read:.1%} of the read")


@pytest.mark.parametrize("policy", ["queueing", "lru"])
def test_request_and_miss(benchmark, page_file, policy):
    """The worst case for per-request work: every request reads one page, and misses."""
    fd, pages = page_file
    pool = _miss_pool(fd, True, policy)
    pool.set_sharing({p: [f"m{p}"] for p in range(N_PAGES)})
    order = itertools.cycle(range(N_PAGES))

    def miss() -> tuple[int, int]:
        page = next(order)
        pool.note_request(f"m{page}")
        with pool.pin(page) as frame:
            return page, int(frame[-1])

    page, last = benchmark(miss)
    assert last == pages[page, -1]
    assert pool.stats().hits == 0


@pytest.mark.parametrize("policy", ["queueing", "lru"])
def test_note_request(benchmark, policy):
    """``note_request`` alone (rate update; the queueing policy's periodic revaluation),
    over a family of 30 models with Zipf popularity, 20 pages each, as in bufferpool.compare."""
    from tensorstore_bufferpool import workload

    w = workload.generate(30, n_requests=4000, seed=0)
    pool = BufferPool(64 * PAGE, PAGE, lambda p: b"", policy=policy)
    pool.set_sharing(w.sharing)
    for model in w.trace[:1000]:  # warm: rates learnt, pages of every class resident
        pool.note_request(model)
        for page in w.model_pages[model]:
            with pool.pin(page):
                pass
    trace = itertools.cycle(w.trace[1000:])
    benchmark(lambda: pool.note_request(next(trace)))
    assert pool.stats().requests > 1000
