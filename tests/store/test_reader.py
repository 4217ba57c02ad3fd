"""Zero-copy reads: read-only views of the memory map, and lifetimes that cannot dangle."""

import gc

import numpy as np
import pytest
from support import random_model

import tensorstore as ts


@pytest.fixture
def filled(store_path):
    # Views are of raw blocks only: an encoded tensor is decoded into a new array.
    s = ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB", codec="raw")
    s.add_model("m", {"small": np.arange(100, dtype=np.float32), "big": np.arange(40000, dtype=np.float32)})
    yield s
    gc.collect()
    s.close()


def test_one_run_tensors_are_read_only_views_and_others_copies(filled):
    with filled.reader() as r:
        t = r.load_model("m")
        assert r.is_view(t["small"]) and not r.is_view(t["big"])
        assert np.array_equal(t["small"], np.arange(100)) and np.array_equal(t["big"], np.arange(40000))
        with pytest.raises(ValueError, match="read-only"):
            t["small"][0] = 1
        with pytest.raises(ValueError):
            t["small"].flags.writeable = True
        private = np.array(t["small"])
        private[0] = 1  # a copy is the caller's own
        assert r.load_tensor("m", "small")[0] == 0


def test_a_view_keeps_its_snapshot_after_the_reader_and_a_writer_move_on(filled):
    with filled.reader() as r:
        view = r.load_model("m")["small"]
    # the writer deletes the model and fills the freed space with other data
    filled.delete_model("m")
    for i in range(5):
        filled.add_model(f"other{i}", random_model(i))
    assert np.array_equal(view, np.arange(100))  # still the snapshot's bytes
    del view
    gc.collect()
    assert filled.env.live_views == 0


def test_closing_the_store_while_views_live_is_a_clear_error(filled):
    with filled.reader() as r:
        view = r.load_tensor("m", "small")
    with pytest.raises(ts.ViewsAliveError, match="1 zero-copy view"):
        filled.close()
    assert view.sum() == sum(range(100))  # still safe to read: the store stayed open
    del view
    gc.collect()
    filled.close()
    with pytest.raises(ts.StoreClosedError):
        filled.load_model("m")


def test_a_closed_reader_refuses_loads(filled):
    r = filled.reader()
    r.close()
    with pytest.raises(ts.StoreClosedError, match="reader is closed"):
        r.load_model("m")


def test_encoded_tensors_are_decoded_copies(store_path):
    with ts.open(store_path, "w", page_size="64KiB", block_bytes="4KiB") as s:
        small = np.arange(100, dtype=np.float32)  # packs well: stored encoded, in one run
        s.add_model("m", {"small": small})
        assert s.stats().encodings["packed"] == 1
        with s.reader() as r:
            got = r.load_model("m")["small"]
            assert not r.is_view(got) and np.array_equal(got, small)
            del got
