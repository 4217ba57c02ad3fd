"""The CP-SAT cluster model, on clusters whose optimum is known."""

from __future__ import annotations

from tensorstore_packing.cpsat import ClusterModel, cluster_cost, solve_cluster


def one_per_page(n_items: int, n_pages: int, classes) -> list:
    """A feasible hint that puts item i on page i."""
    return [[[int(k == i) * m for k in range(n_pages)] for _, m in cls] for i, cls in enumerate(classes)]


def model(classes, item_cost, page_cost=100, capacity=10, tensor_items=(), tensor_cost=()):
    n = len(classes)
    return ClusterModel(
        capacity=capacity,
        base_load=[0] * n,
        is_new=[True] * n,
        item_classes=classes,
        item_cost=item_cost,
        tensor_items=list(tensor_items),
        tensor_cost=list(tensor_cost),
        page_cost=page_cost,
    )


def test_bin_packing_optimum_from_a_bad_hint():
    # items 5, 5, 3, 7 into pages of 10: two pages (5+5, 3+7)
    classes = [[(5, 1)], [(5, 1)], [(3, 1)], [(7, 1)]]
    m = model(classes, item_cost=[0, 0, 0, 0])
    hint = one_per_page(4, 4, classes)
    assert cluster_cost(m, hint) == 400
    solution = solve_cluster(m, hint, time_limit=5, num_workers=1)
    assert solution.status == "optimal"
    assert cluster_cost(m, solution.counts) == 200


def test_splitting_pays_only_when_reads_are_cheap():
    # three items of two 4-byte blocks (8 bytes) in pages of 12: whole they need 3 pages,
    # splitting one of them fits 2 pages
    classes = [[(4, 2)], [(4, 2)], [(4, 2)]]
    hint = one_per_page(3, 3, classes)
    cheap = model(classes, item_cost=[1, 1, 1], capacity=12)
    solution = solve_cluster(cheap, hint, time_limit=5, num_workers=1)
    assert solution.status == "optimal"
    assert cluster_cost(cheap, solution.counts) == 2 * 100 + 4  # one item on two pages
    costly = model(classes, item_cost=[1000, 1000, 1000], capacity=12)
    solution = solve_cluster(costly, hint, time_limit=5, num_workers=1)
    assert cluster_cost(costly, solution.counts) == 3 * 100 + 3000  # nothing split


def test_tensor_reading_two_items_gets_them_on_one_page():
    # items 4, 4, 6, 6 in pages of 10: any pairing of a 4 with a 6 uses 2 pages; a tensor
    # reading both 4s makes the 4+4 pairing (and 6, 6 alone) worth a third page only if
    # reads cost more than a page
    classes = [[(4, 1)], [(4, 1)], [(6, 1)], [(6, 1)]]
    hint = one_per_page(4, 4, classes)
    cheap = model(classes, [0] * 4, tensor_items=[[0, 1]], tensor_cost=[50])
    costly = model(classes, [0] * 4, tensor_items=[[0, 1]], tensor_cost=[500])
    assert cluster_cost(cheap, solve_cluster(cheap, hint, time_limit=5, num_workers=1).counts) == 200 + 100
    assert cluster_cost(costly, solve_cluster(costly, hint, time_limit=5, num_workers=1).counts) == 300 + 500


def test_existing_pages_are_free_but_bounded_by_their_load():
    # one existing page with 6 of 10 bytes used; a 4-byte item fits there for free
    m = ClusterModel(
        capacity=10, base_load=[6, 0], is_new=[False, True], item_classes=[[(4, 1)]],
        item_cost=[0], tensor_items=[], tensor_cost=[], page_cost=100,
    )
    solution = solve_cluster(m, [[[0, 1]]], time_limit=5, num_workers=1)
    assert solution.counts == [[[1, 0]]]
    assert cluster_cost(m, solution.counts) == 0


def test_a_page_a_reader_already_reads_costs_it_nothing():
    # a model reads existing page 0 for other data: its 4-byte item belongs there, not
    # on existing page 1 (which it would read in vain), though both have room
    m = ClusterModel(
        capacity=10, base_load=[6, 5], is_new=[False, False], item_classes=[[(4, 1)]],
        item_cost=[0], tensor_items=[[0]], tensor_cost=[50], page_cost=100,
        tensor_read_pages=[[0]],
    )
    solution = solve_cluster(m, [[[0, 1]]], time_limit=5, num_workers=1)
    assert solution.counts == [[[1, 0]]]
    assert cluster_cost(m, solution.counts) == 0
    assert cluster_cost(m, [[[0, 1]]]) == 50


def test_max_new_pages_caps_the_pages_used_even_when_reads_would_pay_for_more():
    # two 6-byte items read by costly tensors want a new page each; capped at one new
    # page, the second is split between it and the 2 bytes left on the existing page
    classes = [[(2, 3)], [(2, 3)]]
    capped = ClusterModel(
        capacity=10, base_load=[8, 0, 0], is_new=[False, True, True], item_classes=classes,
        item_cost=[500, 500], tensor_items=[], tensor_cost=[], page_cost=100, max_new_pages=1,
    )
    hint = [[[0, 3, 0]], [[1, 2, 0]]]
    solution = solve_cluster(capped, hint, time_limit=5, num_workers=1)
    assert cluster_cost(capped, solution.counts) == 100 + 500 + 2 * 500
    assert not any(per_class[2] for item in solution.counts for per_class in item)
    free = ClusterModel(**{f: getattr(capped, f) for f in capped.__dataclass_fields__} | {"max_new_pages": None})
    assert cluster_cost(free, solve_cluster(free, hint, time_limit=5, num_workers=1).counts) == 2 * 100 + 1000
