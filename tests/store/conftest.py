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
