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


@pytest.fixture
def raw_store(store_path):
    """A store that keeps blocks as they are: for tests of placement, padding and views."""
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB", codec="raw") as s:
        yield s


@pytest.fixture(autouse=True, scope="session")
def _digits_family_trained_once():
    """Several tests (and the bench code they run) train the digits family; training is
    deterministic (fixed seeds), so it runs once per session and each caller gets copies."""
    from tensorstore.corpora import digits

    original, trained = digits.build_family, {}

    def build_family(variants=digits.FAMILY):
        key = tuple(variants)
        # Each fine-tune is trained from the base alone, so a family with the same base
        # and a subset of the variants is a subset of one already trained.
        have = next((k for k in trained if k[0] == key[0] and set(key) <= set(k)), None)
        if have is None:
            have = key
            trained[key] = original(variants)
        return {v.name: {k: a.copy() for k, a in trained[have][v.name].items()} for v in key}

    digits.build_family = build_family
    yield
    digits.build_family = original
