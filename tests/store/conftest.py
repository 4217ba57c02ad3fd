import numpy as np
import pytest

import tensorstore as ts


@pytest.fixture
def store_path(tmp_path):
    return tmp_path / "store"


@pytest.fixture
def store(store_path):
    # Small pages and blocks so that small test tensors span many blocks and pages.
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB") as s:
        yield s


@pytest.fixture(autouse=True, scope="session")
def _digits_family_trained_once():
    """Several tests (and the bench code they run) train the digits family; training is
    deterministic (fixed seeds), so it runs once per session and each caller gets copies."""
    from tensorstore.corpora import digits

    original, trained = digits.build_family, {}

    def build_family(variants=digits.FAMILY):
        key = tuple(variants)
        if key not in trained:
            trained[key] = original(variants)
        return {m: {k: v.copy() for k, v in t.items()} for m, t in trained[key].items()}

    digits.build_family = build_family
    yield
    digits.build_family = original
