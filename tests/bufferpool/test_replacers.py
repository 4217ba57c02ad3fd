"""Replacer semantics: small hand-checkable scenarios per policy, and the shared protocol."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensorstore_bufferpool import POLICIES, PageNotTrackedError, UnknownPolicyError, make_replacer
from tensorstore_bufferpool.replacer import Replacer


def fill(replacer: Replacer, pages: list[int]) -> None:
    """Access each page in turn and make it evictable, as the simulator does."""
    for page in pages:
        replacer.record_access(page)
        replacer.set_evictable(page, True)


def drain(replacer: Replacer) -> list[int]:
    victims = []
    while (victim := replacer.evict()) is not None:
        victims.append(victim)
    return victims


def test_lru_evicts_least_recently_used():
    lru = make_replacer("lru", 3)
    fill(lru, [1, 2, 3, 1])
    assert drain(lru) == [2, 3, 1]


def test_mru_evicts_most_recently_used():
    mru = make_replacer("mru", 3)
    fill(mru, [1, 2, 3, 1])
    assert drain(mru) == [1, 3, 2]


def test_lfu_evicts_least_frequently_used_then_least_recent():
    lfu = make_replacer("lfu", 5)
    fill(lfu, [1, 1, 1, 2, 2, 3, 4, 5, 4])
    # counts: 1->3, 2->2, 3->1, 4->2, 5->1; ties go least recent first
    assert drain(lfu) == [3, 5, 2, 4, 1]


def test_arc_keeps_pages_seen_twice_through_a_scan():
    arc, lru = make_replacer("arc", 4), make_replacer("lru", 4)
    for replacer in (arc, lru):
        resident: set[int] = set()
        for page in [1, 2, 1, 2, *range(10, 30)]:  # 1 and 2 seen twice, then a one-time scan
            replacer.record_access(page)
            if page not in resident and len(resident) >= 4:
                resident.remove(replacer.evict())
            resident.add(page)
            replacer.set_evictable(page, True)
        assert len(resident) == 4
    assert {1, 2} <= set(drain(arc))  # still resident under ARC
    assert not {1, 2} & set(drain(lru))  # LRU lost them to the scan


def test_arc_ghost_hit_goes_to_the_frequent_list():
    arc = make_replacer("arc", 2)
    fill(arc, [1, 2, 1])  # T1=[2], T2=[1]
    assert arc.evict() == 2  # |T1| > p=0: LRU of T1, remembered in B1
    assert 2 not in arc
    fill(arc, [2])  # a hit in B1 grows p; 2 enters T2 behind 1
    assert 2 in arc
    assert drain(arc) == [1, 2]


def test_s3fifo_demotes_new_one_hit_pages_before_older_reused_ones():
    s3, lru = make_replacer("s3fifo", 10), make_replacer("lru", 10)
    victims = {}
    for name, replacer in (("s3fifo", s3), ("lru", lru)):
        resident: set[int] = set()
        out = []
        for page in [*range(1, 11), *range(1, 6), *range(11, 17)]:
            replacer.record_access(page)
            if page not in resident and len(resident) >= 10:
                victim = replacer.evict()
                out.append(victim)
                resident.remove(victim)
            resident.add(page)
            replacer.set_evictable(page, True)
        victims[name] = out
    # Both drop the five pages never reused first; then LRU drops old page 1 while
    # S3-FIFO drops the newcomer 11, which was only seen once.
    assert victims["s3fifo"] == [6, 7, 8, 9, 10, 11]
    assert victims["lru"] == [6, 7, 8, 9, 10, 1]


@pytest.mark.parametrize("policy", POLICIES)
def test_non_evictable_pages_are_never_evicted(policy):
    replacer = make_replacer(policy, 8)
    for page in range(6):
        replacer.record_access(page)
    for page in (0, 2, 4):
        replacer.set_evictable(page, True)
    assert replacer.size() == 3
    assert sorted(drain(replacer)) == [0, 2, 4]
    assert replacer.size() == 0
    assert all(page in replacer for page in (1, 3, 5))


@pytest.mark.parametrize("policy", POLICIES)
def test_remove_forgets_a_page(policy):
    replacer = make_replacer(policy, 4)
    fill(replacer, [1, 2, 3])
    replacer.remove(2)
    replacer.remove(99)  # unknown: no-op
    assert 2 not in replacer
    assert replacer.size() == 2
    assert sorted(drain(replacer)) == [1, 3]


@pytest.mark.parametrize("policy", POLICIES)
def test_set_evictable_on_an_untracked_page_raises_key_error(policy):
    replacer = make_replacer(policy, 4)
    with pytest.raises(PageNotTrackedError, match="page 7"):
        replacer.set_evictable(7, True)
    with pytest.raises(KeyError):
        replacer.set_evictable(7, False)


def test_unknown_policy_lists_the_valid_names():
    with pytest.raises(UnknownPolicyError) as info:
        make_replacer("clock", 4)
    assert isinstance(info.value, ValueError)
    for name in ("lru", "mru", "lfu", "arc", "s3fifo", "queueing"):
        assert name in str(info.value)


def test_policy_names_are_case_insensitive_and_queueing_is_first():
    assert make_replacer("LRU", 2).name == "lru"
    assert POLICIES[0] == "queueing"


@pytest.mark.parametrize("bad", [0, -3])
def test_capacity_must_be_positive(bad):
    with pytest.raises(ValueError, match="capacity"):
        make_replacer("lru", bad)


def test_capacity_must_be_an_int():
    with pytest.raises(TypeError, match="capacity"):
        make_replacer("lru", 2.5)


def test_unknown_policy_option_is_a_type_error():
    with pytest.raises(TypeError, match="half_life"):
        make_replacer("lru", 4, half_life=10)


operations = st.lists(
    st.tuples(st.sampled_from(["access", "pin", "unpin", "evict", "remove"]), st.integers(0, 9)),
    max_size=120,
)


@pytest.mark.parametrize("policy", POLICIES)
@given(ops=operations)
def test_protocol_against_a_reference_model(policy, ops):
    """Any sequence of verbs: evict returns only evictable tracked pages, size() stays right."""
    replacer = make_replacer(policy, 6)
    tracked: dict[int, bool] = {}  # page -> evictable
    for op, page in ops:
        if op == "access":
            replacer.record_access(page)
            tracked.setdefault(page, False)
        elif op in ("pin", "unpin") and page in tracked:
            replacer.set_evictable(page, op == "unpin")
            tracked[page] = op == "unpin"
        elif op == "evict":
            victim = replacer.evict()
            if victim is None:
                assert not any(tracked.values())
            else:
                assert tracked.pop(victim) is True
        elif op == "remove":
            replacer.remove(page)
            tracked.pop(page, None)
        assert replacer.size() == sum(tracked.values())
        assert all(p in replacer for p in tracked)
