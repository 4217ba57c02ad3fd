"""The codec's C kernel (tensorstore/_codec_kernel.c) against codec.py's numpy code, which
is its specification: the same payload bytes, the same decoded bytes, the same errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tensorstore import codec, threads
from tensorstore.dtypes import DTYPES as STORE_DTYPES, layout

KERNEL = codec.KERNEL


def test_the_kernel_is_built_where_a_compiler_is():
    """The extension is optional at install (no compiler: numpy does the work); where the
    machine has one, a missing kernel is a broken build, not a choice."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine")
    assert KERNEL is not None


needs_kernel = pytest.mark.skipif(KERNEL is None, reason="the C kernel is not built")


def _both(fn):
    """``fn()`` with the kernel, then with numpy alone: each a value or the ValueError."""
    out = []
    try:
        for kernel in (KERNEL, None):
            codec.KERNEL = kernel
            try:
                out.append(fn())
            except ValueError as exc:
                out.append(("ValueError", str(exc)))
    finally:
        codec.KERNEL = KERNEL
    return out


def _near(block: bytes, data) -> bytes:
    """A copy of ``block`` with a few bytes changed (a delta with small planes)."""
    out = bytearray(block)
    for at in data.draw(st.lists(st.integers(0, max(len(out) - 1, 0)), max_size=8)) if out else []:
        out[at] ^= 1 << data.draw(st.integers(0, 7))
    return bytes(out)


@needs_kernel
@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(STORE_DTYPES)), data=st.data())
def test_kernel_and_numpy_make_and_read_the_same_payloads(name, data):
    """Every dtype width, lengths that are not whole elements too, random and nearly equal
    references: byte-identical payloads, and each path decodes the other's."""
    lay = layout(name)
    n = data.draw(st.integers(0, 40)) * lay.width + data.draw(st.integers(0, lay.width - 1))
    block = data.draw(st.binary(min_size=n, max_size=n))
    ref = data.draw(st.sampled_from([data.draw(st.binary(min_size=n, max_size=n)), _near(block, data), bytes(n)]))
    packed_ref = codec.encode(ref, lay)
    made = _both(lambda: (
        codec.encode(block, lay),
        codec.encode(block, lay, ref),
        codec._encoded(block, lay, packed_ref, codec.PACKED),
        codec.encode_xor(block, lay, ref),
        codec._choose(block, lay, [(ref, codec.RAW), (packed_ref, codec.PACKED)]),
    ))
    assert made[0] == made[1]
    packed, delta, delta_of_packed, xor, _ = made[0]
    assert delta == delta_of_packed
    for reads in _both(lambda: [
        codec.decode(packed, n, lay).tobytes(),
        codec.decode(delta, n, lay, ref).tobytes(),
        codec.decode(delta, n, lay, ref_payload=packed_ref).tobytes(),
        codec.decode(xor, n, lay, ref).tobytes(),
        codec.decode(xor, n, lay, ref_payload=packed_ref).tobytes(),
    ]):
        assert reads == [block] * 5


@needs_kernel
@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["F32", "BF16", "I64", "U8"]), data=st.data())
def test_kernel_and_numpy_agree_on_damaged_payloads(name, data):
    """A payload cut, extended or with bytes changed: both paths raise the same
    ValueError, or both decode to the same bytes."""
    lay = layout(name)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n = data.draw(st.integers(1, 64)) * lay.width
    ref = (rng.standard_normal(n // 4 + 1).astype(np.float32).tobytes() * 2)[:n]
    block = _near(ref, data)
    packed_ref = codec.encode(ref, lay)
    payload = bytearray(data.draw(st.sampled_from([codec.encode(block, lay), codec.encode(block, lay, ref)])))
    how = data.draw(st.sampled_from(["cut", "extend", "flip"]))
    if how == "cut":
        del payload[data.draw(st.integers(0, max(len(payload) - 1, 0))):]
    elif how == "extend":
        payload += data.draw(st.binary(min_size=1, max_size=9))
    else:
        for at in data.draw(st.lists(st.integers(0, len(payload) - 1), min_size=1, max_size=4)):
            payload[at] ^= 1 << data.draw(st.integers(0, 7))
    payload = bytes(payload)
    for reads in (
        _both(lambda: codec.decode(payload, n, lay).tobytes()),
        _both(lambda: codec.decode(payload, n, lay, ref).tobytes()),
        _both(lambda: codec.decode(payload, n, lay, ref_payload=packed_ref).tobytes()),
    ):
        assert reads[0] == reads[1]


@needs_kernel
def test_a_damaged_reference_is_a_value_error_from_the_kernel():
    lay = layout("F32")
    ref = np.linspace(-1, 1, 1024, dtype=np.float32)
    block = (ref + np.float32(1e-4)).tobytes()
    delta = codec.encode(block, lay, ref.tobytes())
    with pytest.raises(ValueError, match="cut short or malformed"):
        codec.decode(delta, len(block), lay, ref_payload=codec.encode(ref.tobytes(), lay)[:3])
    with pytest.raises(ValueError, match="as long as the block"):
        codec.decode(delta, len(block), lay, ref.tobytes()[:100])
    with pytest.raises(ValueError, match="as long as the block"):
        codec._encoded(block, lay, ref.tobytes()[:100], codec.RAW)


def _delta_jobs(count: int) -> tuple[list[codec.DecodeJob], list[bytes]]:
    rng = np.random.default_rng(3)
    lay = layout("F32")
    jobs, want = [], []
    outs = np.zeros((count, 4096), dtype=np.uint8)
    for k in range(count):
        ref = rng.standard_normal(1024).astype(np.float32)
        block = ref + np.float32(1e-4) * rng.standard_normal(1024).astype(np.float32)
        jobs.append(codec.DecodeJob(codec.encode(block.tobytes(), lay, ref.tobytes()),
                                    (codec.encode(ref.tobytes(), lay), codec.PACKED), lay, outs[k], f"block {k}"))
        want.append(block.tobytes())
    return jobs, want


def test_decode_many_on_threads_fills_every_output():
    jobs, want = _delta_jobs(64)
    codec.decode_many(jobs)
    assert [j.out.tobytes() for j in jobs] == want


def test_decode_many_names_the_first_block_that_does_not_decode():
    """Blocks are spread over threads; the error still names the first damaged one in
    the caller's order, whichever thread met it first."""
    jobs, _ = _delta_jobs(64)
    for k in (41, 17, 50):  # 17 and 41 fall to different threads of two
        jobs[k] = codec.DecodeJob(jobs[k].payload[:5], jobs[k].ref, jobs[k].layout, jobs[k].out, f"block {k}")
    with pytest.raises(ValueError, match=r"^block 17: "):
        codec.decode_many(jobs)


def test_spread_keeps_order_and_hands_back_exceptions():
    def fn(x: int) -> int:
        if x % 7 == 3:
            raise KeyError(x)
        return x * x

    got = threads.spread(fn, list(range(50)), threads=3, least=1)
    assert [g if not isinstance(g, KeyError) else "err" for g in got] == [
        "err" if x % 7 == 3 else x * x for x in range(50)]
    assert threads.spread(fn, [], threads=2) == []


def test_spread_in_a_forked_child_makes_its_own_threads():
    """A child forked after the pool started has none of its threads: spread must not
    wait on them forever."""
    import multiprocessing

    threads.spread(abs, list(range(-40, 0)), threads=2, least=1)  # the parent's pool exists
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(threads.spread, (abs, list(range(-40, 0))), {"threads": 2, "least": 1}).get(timeout=60)
    assert got == list(range(40, 0, -1))


def test_default_threads_follows_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "zero")
    assert threads.default_threads() >= 1


@needs_kernel
@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(STORE_DTYPES)), data=st.data())
def test_choose_many_in_kernel_batches_chooses_what_numpy_chooses(name, data):
    """``choose_all`` (shares of blocks in one kernel call each) against ``_choose`` block
    by block in numpy: the same encoding, payload and reference for every block, with
    references raw and packed, near and far, and none."""
    lay = layout(name)
    jobs = []
    for _ in range(data.draw(st.integers(1, 9))):
        n = data.draw(st.integers(0, 40)) * lay.width
        block = data.draw(st.sampled_from([data.draw(st.binary(min_size=n, max_size=n)), bytes(n),
                                           (bytes(range(7)) * (n // 7 + 1))[:n]]))
        refs = []
        for _ in range(data.draw(st.integers(0, 3))):
            ref = data.draw(st.sampled_from([_near(block, data), data.draw(st.binary(min_size=n, max_size=n))]))
            refs.append(data.draw(st.sampled_from([(ref, codec.RAW), (codec.encode(ref, lay), codec.PACKED)])))
        jobs.append(codec.Job(block, refs))
    kernel, numpy_ = _both(lambda: codec.choose_many(jobs, lay))
    assert kernel == numpy_
    assert kernel == [codec._choose(j.data, lay, j.refs) for j in jobs]
    many = jobs * (40 // len(jobs) + 1)  # more than one share: handed to the pool
    assert codec.choose_many(many, lay) == kernel * (40 // len(jobs) + 1)


@needs_kernel
def test_choose_many_raises_what_numpy_raises_for_an_unusable_reference():
    lay = layout("F32")
    block = np.linspace(-1, 1, 256, dtype=np.float32).tobytes()
    good = codec.Job(block, [(block, codec.RAW)])
    for bad in ((block[:100], codec.RAW), (codec.encode(block, lay)[:3], codec.PACKED)):
        jobs = [good] * 5 + [codec.Job(block, [bad])] + [good] * 5
        kernel, numpy_ = _both(lambda: codec.choose_many(jobs, lay))
        assert kernel == numpy_ and kernel[0] == "ValueError"


def _hold_the_pool():
    """Occupy every thread of the pool until the returned event is set."""
    import threading

    threads._helpers(1)
    gate, busy = threading.Event(), threading.Semaphore(0)

    def hold(_):
        busy.release()
        gate.wait(10)

    held = [threads.start(hold, [0]) for _ in range(threads._pool_size)]
    for _ in held:
        assert busy.acquire(timeout=10)
    return gate, held


def test_started_work_comes_back_in_order_with_the_first_error_raised():
    """``threads.start``: results in the items' order whoever ran them; items no pool
    thread began run in the caller; the first failing item's exception, in order."""
    import threading

    def fn(x: int) -> int:
        ran_in[x] = threading.current_thread()
        if x in (5, 7):
            raise KeyError(x)
        return x * 10

    ran_in = {}
    assert threads.start(fn, list(range(5))).results() == [0, 10, 20, 30, 40]
    assert sorted(ran_in) == list(range(5))
    gate, held = _hold_the_pool()
    ran_in = {}
    started = threads.start(fn, [7, 1, 5, 2])
    with pytest.raises(KeyError, match="7"):
        started.results()
    assert set(ran_in.values()) == {threading.current_thread()}  # the pool was busy throughout
    gate.set()
    for h in held:
        h.results()


def test_started_work_not_begun_is_dropped_by_cancel():
    import time

    gate, held = _hold_the_pool()
    done = []
    later = threads.start(done.append, list(range(5)))
    later.cancel()
    gate.set()
    for h in held:
        h.results()
    time.sleep(0.2)
    assert done == []


@settings(max_examples=200, deadline=None)
@given(blocks=st.lists(st.binary(max_size=300), max_size=200), classes=st.data())
def test_block_digests_are_the_index_digests(blocks, classes):
    """``digests.block_digests`` (the kernel's MurmurHash3, in shares on threads) against
    ``tensorstore_index.exact.block_digest`` (mmh3) for every length, tail and seed."""
    from tensorstore_index.exact import block_digest

    from tensorstore.digests import block_digests

    seeds = [classes.draw(st.integers(0, 2**33)) for _ in blocks]
    assert block_digests(blocks, seeds) == [block_digest(b, c) for b, c in zip(blocks, seeds)]
    big = [bytes(range(256)) * 256 + b for b in blocks[:3]]  # 64 KiB and more
    assert block_digests(big, seeds[:3]) == [block_digest(b, c) for b, c in zip(big, seeds[:3])]


def test_started_work_lets_go_of_its_items_while_the_pool_still_queues_them():
    """Items ran in the caller because every pool thread was busy stay in the pool's queue
    as dropped tasks; they must not keep the items alive (an item may be a view of a
    mapping its owner is about to close)."""
    import gc
    import weakref

    class Item:
        pass

    gate, held = _hold_the_pool()
    items = [Item() for _ in range(3)]
    refs = [weakref.ref(i) for i in items]
    started = threads.start(lambda item: 1, items)
    del items
    assert started.results() == [1, 1, 1]
    gc.collect()
    assert [r() for r in refs] == [None] * 3
    gate.set()
    for h in held:
        h.results()


def test_cancelling_started_work_after_its_results_raised_does_nothing():
    """An add that fails while collecting a run's encodings cancels every run still
    listed, that one included: cancel after results must be harmless."""
    def fn(x: int) -> int:
        raise KeyError(x)

    gate, held = _hold_the_pool()  # the caller runs both: their tasks are dropped ones
    started = threads.start(fn, [1, 2])
    with pytest.raises(KeyError):
        started.results()
    started.cancel()
    gate.set()
    for h in held:
        h.results()
