"""Shared helpers for the packing tests: random problems and an independent checker.

Test modules import it as ``tests.packing.helpers`` (pytest imports test files by
their path from the repository root).
"""

from __future__ import annotations

from hypothesis import strategies as st

from tensorstore_packing import PackingProblem, PackResult


@st.composite
def problems(draw: st.DrawFn, max_blocks: int = 40, max_tensors: int = 8) -> PackingProblem:
    """Random small problems: any sizes up to a page, overlapping tensors, repeats
    within a tensor, optional weights and models, alignment 1 or 16."""
    alignment = draw(st.sampled_from([1, 16]))
    page_bytes = draw(st.sampled_from([64, 160, 1024, 4096]))
    n = draw(st.integers(0, max_blocks))
    sizes = draw(st.lists(st.integers(1, page_bytes), min_size=n, max_size=n))
    ids = draw(st.lists(st.integers(0, 10**9), min_size=n, max_size=n, unique=True))
    n_tensors = draw(st.integers(0, max_tensors))
    tensors = {}
    for t in range(n_tensors):
        picks = draw(st.lists(st.sampled_from(ids), max_size=15)) if ids else []
        tensors[f"t{t}"] = picks
    weights = None
    if tensors and draw(st.booleans()):
        weights = {name: draw(st.floats(0, 5)) for name in tensors}
    models = None
    if tensors and draw(st.booleans()):
        names = list(tensors)
        models = {f"m{m}": draw(st.lists(st.sampled_from(names), max_size=4)) for m in range(3)}
    return PackingProblem.from_tensors(
        tensors, dict(zip(ids, sizes)), page_bytes, weights, models=models, alignment=alignment
    )


def check_result(result: PackResult) -> None:
    """Recompute everything a result claims from its placement, with plain Python."""
    p = result.problem
    page_of = result.block_page.tolist()
    offset = result.block_offset.tolist()
    slot = [-(-s // p.alignment) * p.alignment for s in p.block_bytes.tolist()]
    assert len(page_of) == p.n_blocks == len(offset)

    # every block in exactly one existing page; pages numbered 0..pages-1, none empty
    assert set(page_of) == set(range(result.pages))
    by_page: dict[int, list[int]] = {}
    for b, pg in enumerate(page_of):
        by_page.setdefault(pg, []).append(b)
    for pg, blocks in by_page.items():
        blocks.sort(key=lambda b: offset[b])
        end = 0
        for b in blocks:
            assert offset[b] % p.alignment == 0, "offset not aligned"
            assert offset[b] >= end, "blocks overlap"
            end = offset[b] + slot[b]
        assert end <= p.page_bytes, "page over capacity"
        assert result.page_used_bytes[pg] == sum(slot[b] for b in blocks)

    # lower bounds hold and are at least the simple volume bounds
    raw_total = int(p.block_bytes.sum())
    assert -(-raw_total // p.page_bytes) <= result.lower_bound_pages <= result.pages
    for t in range(p.n_tensors):
        blocks = set(p.tensor_blocks_of(t).tolist())
        pages = {page_of[b] for b in blocks}
        assert result.tensor_pages_read[t] == len(pages)
        own = sum(slot[b] for b in blocks)
        assert result.tensor_excess_bytes[t] == sum(result.page_used_bytes[pg] for pg in pages) - own
        raw = sum(int(p.block_bytes[b]) for b in blocks)
        assert -(-raw // p.page_bytes) <= result.tensor_lower_bound[t] <= len(pages)

    # look-ups by external id agree with the arrays
    for b in range(min(p.n_blocks, 5)):
        block_id = int(p.block_ids[b])
        assert result.page_of(block_id) == page_of[b]
        assert result.offset_of(block_id) == offset[b]
    assert result.placement() == {
        int(i): (pg, off) for i, pg, off in zip(p.block_ids.tolist(), page_of, offset)
    }

