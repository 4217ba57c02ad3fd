"""A full disk (SPEC §4: "a full disk is a clear error, not a corrupt store").

A store on a 64 MiB tmpfs takes distinct 2 MiB models until a write fails. The store must
come out of it whole: the handle still reads, it reopens, ``verify()`` passes, every model
added before is bit-exact, and freeing space makes it writable again. Needs ``mount``
(root); skipped where mounting is refused.
"""

from __future__ import annotations

import numpy as np
import pytest

import tensorstore as ts

MODEL_FLOATS = 512 * 1024  # 2 MiB of float32: about 30 fit in 64 MiB


def _model(i: int) -> dict[str, np.ndarray]:
    return {
        "w": np.random.default_rng(i).standard_normal(MODEL_FLOATS).astype(np.float32),
        "b": np.arange(100, dtype=np.int32) + i,
    }


def _cheap_snapshot(s: ts.Store) -> tuple:
    tables = s.catalog()
    return (s.stats().to_dict() | {"file_bytes": None}, {n: t.drop(["created"]).to_pylist() if n == "models" else t.to_pylist() for n, t in tables.items()})


def _fill(root) -> tuple:
    """Add models until one fails; return (path, names added, the exception, snapshots)."""
    path = root / "store"
    added = []
    with ts.open(path, "w", page_size="256KiB", block_bytes="16KiB") as s:
        for i in range(200):
            before = _cheap_snapshot(s)
            try:
                s.add_model(f"m{i}", _model(i))
            except Exception as exc:  # noqa: BLE001 - which one is what the tests look at
                after = _cheap_snapshot(s)
                # The same handle still reads what was there before.
                last = s.load_model(added[-1])
                assert all(last[k].tobytes() == v.tobytes() for k, v in _model(len(added) - 1).items())
                return path, added, exc, before, after
            added.append(f"m{i}")
    pytest.fail("200 models of 2 MiB never filled a 64 MiB disk")


def test_a_full_disk_leaves_the_store_whole(mount_tmpfs, counts):
    root = mount_tmpfs("64m")
    path, added, exc, before, after = _fill(root)
    assert isinstance(exc, ts.StoreError), f"the failing add raised {type(exc).__name__}: {exc}"
    assert str(path) in str(exc)
    assert len(added) >= 20  # the disk, not something else, stopped it
    assert after == before  # the failed call changed nothing
    counts("models added before the disk was full", len(added))
    counts("exception of the failing add", f"{type(exc).__module__}.{type(exc).__qualname__}: {str(exc).replace(str(path), 'P')}")

    with ts.open(path, "r") as s:
        report = s.verify()
        assert report.ok, report.problems
        assert sorted(s) == sorted(added)
        for i, name in enumerate(added):
            got = s.load_model(name)
            assert all(got[k].tobytes() == v.tobytes() for k, v in _model(i).items()), name

    with ts.open(path, "a") as s:
        # Still full: another large add fails the same clean way, and changes nothing.
        with pytest.raises(ts.StoreError):
            s.add_model("again", _model(1000))
        assert "again" not in s
        # Freeing space makes it writable again.
        for name in added[:4]:
            s.delete_model(name)
        s.add_model("after", _model(1001))
        assert s.load_model("after")["w"].tobytes() == _model(1001)["w"].tobytes()
        assert s.verify().ok


def test_a_full_disk_raises_store_full_error(mount_tmpfs):
    _, _, exc, _, _ = _fill(mount_tmpfs("64m"))
    assert isinstance(exc, ts.StoreFullError), f"{type(exc).__name__}: {exc}"
    assert "full" in str(exc)
