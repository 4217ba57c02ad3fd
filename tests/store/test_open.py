"""Open modes, creation parameters and paths that are not stores."""

import numpy as np
import pytest

import tensorstore as ts


def test_r_and_r_plus_need_an_existing_store(tmp_path):
    for mode in ("r", "r+"):
        with pytest.raises(ts.StoreNotFoundError, match="no store"):
            ts.open(tmp_path / "missing", mode)
        with pytest.raises(FileNotFoundError):
            ts.open(tmp_path / "missing", mode)
    assert not (tmp_path / "missing").exists()


def test_a_creates_then_reopens(tmp_path):
    path = tmp_path / "s"
    with ts.open(path, "a", page_size="128KiB", block_bytes=8192) as s:
        s.add_model("m", {"x": np.arange(10)})
    with ts.open(path, "a") as s:
        assert list(s) == ["m"] and s.page_size == 128 << 10 and s.block_bytes == 8192


def test_a_new_store_gets_every_database_in_one_commit(tmp_path):
    import lmdb

    from tensorstore.environment import DB_NAMES, OPTIONAL_DB_NAMES

    path = tmp_path / "s"
    ts.open(path, "w").close()
    env = lmdb.open(str(path), max_dbs=16, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            names = {bytes(k).decode() for k, _ in txn.cursor()}
        commits = env.info()["last_txnid"]
    finally:
        env.close()
    assert names == set(DB_NAMES + OPTIONAL_DB_NAMES)
    assert commits == 2  # the databases, then the format record: not one commit (and sync) each
    with ts.open(path, "r") as s:
        assert len(s) == 0 and s.verify().ok
    with ts.open(path, "a") as s:
        s.add_model("m", {"x": np.arange(10)})
    with ts.open(path, "r") as s:
        assert s.load_model("m")["x"].tolist() == list(range(10))


def test_sizes_are_fixed_at_creation(tmp_path):
    path = tmp_path / "s"
    ts.open(path, "w", page_size="1MiB").close()
    with pytest.raises(ts.InvalidArgumentError, match="fixed at creation"):
        ts.open(path, "a", page_size="2MiB")
    ts.open(path, "r", page_size=1 << 20).close()  # the same value is fine


def test_w_replaces_and_w_minus_refuses(tmp_path):
    path = tmp_path / "s"
    with ts.open(path, "w") as s:
        s.add_model("m", {"x": np.arange(10)})
    with pytest.raises(ts.StoreExistsError, match="already exists"):
        ts.open(path, "w-")
    with ts.open(path, "r") as s:
        assert list(s) == ["m"]
    with ts.open(path, "w") as s:
        assert len(s) == 0


@pytest.mark.parametrize("mode", ["r", "r+", "a", "w", "w-"])
def test_paths_that_are_not_stores_are_refused_and_untouched(tmp_path, mode):
    plain = tmp_path / "photos"
    plain.mkdir()
    (plain / "cat.jpg").write_bytes(b"\xff\xd8 not a store")
    with pytest.raises(ts.StoreError):
        ts.open(plain, mode)
    assert [p.name for p in plain.iterdir()] == ["cat.jpg"]
    afile = tmp_path / "weights.bin"
    afile.write_bytes(b"123")
    with pytest.raises(ts.NotAStoreError, match="is a file"):
        ts.open(afile, mode)
    assert afile.read_bytes() == b"123"


def test_a_foreign_data_file_is_not_a_store(tmp_path):
    path = tmp_path / "s"
    path.mkdir()
    (path / "data.mdb").write_bytes(b"garbage" * 1000)
    with pytest.raises(ts.NotAStoreError):
        ts.open(path, "r")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "rw"}, "mode"),
        ({"page_size": "lots"}, "not a size"),
        ({"page_size": -1}, "positive"),
        ({"page_size": "1KiB", "block_bytes": "4KiB"}, "at most page_size"),
        ({"block_bytes": 8}, "at least"),
    ],
)
def test_bad_open_arguments(tmp_path, kwargs, match):
    with pytest.raises(ts.InvalidArgumentError, match=match):
        ts.open(tmp_path / "s", **kwargs)
    assert not (tmp_path / "s" / "data.mdb").exists()


def test_sizes_parse(tmp_path):
    from tensorstore.units import parse_size

    assert parse_size("4MiB") == 4 << 20
    assert parse_size("64 kb") == 64000
    assert parse_size(" 1.5KiB ") == 1536
    assert parse_size(4096) == 4096
    with pytest.raises(ValueError):
        parse_size("1.5B")
