"""Push, pull, read-through and gc on obstore's in-memory and local-file stores."""

import json
from pathlib import Path

import numpy as np
import pytest
from remote_support import family, same
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import bits, snapshot, tensors

import tensorstore as ts
from tensorstore import remote
from tensorstore.remote_format import Head, Snapshot, head_key, pack_key, sha256, snapshot_key

OPEN = dict(page_size="64KiB", block_bytes="4KiB")


def publish(path, models, url, **push_options):
    with ts.open(path, "a", **OPEN) as s:
        for name, t in models.items():
            s.add_model(name, t, {"name": name})
        return s.push(url, **push_options)


def test_round_trip_every_model_bit_exact(tmp_path, url):
    fam = family()
    report = publish(tmp_path / "a", fam, url)
    assert report.generation == 1 and report.models == sorted(fam)
    pulled = ts.pull(url, tmp_path / "b")
    assert pulled.models == list(fam)  # oldest first: parents before their fine-tunes
    with ts.open(tmp_path / "b", "r") as s:
        assert sorted(s) == sorted(fam)
        for name, t in fam.items():
            assert same(s.load_model(name), t)
            assert s.model_info(name).metadata == {"name": name}
        assert s.verify().ok
    assert remote.verify_remote(url) == []


def test_push_sends_only_what_the_remote_lacks(tmp_path, url):
    fam = family()
    first = publish(tmp_path / "a", {"base": fam["base"]}, url)
    with ts.open(tmp_path / "a", "a") as s:
        before = s.stats().encoded_bytes
        s.add_model("full", fam["full"])
        new_bytes = s.stats().encoded_bytes - before
        again = s.push(url)
        assert again.models == ["full"] and again.unchanged == ["base"]
        assert again.stored_bytes_sent == new_bytes  # exactly the fine-tune's new blocks, as stored
        head_bytes = again.transfer["bytes_out"] - new_bytes - again.snapshot_bytes
        assert 0 < head_bytes < 200  # besides the blocks and the snapshot, only the small head
        nothing = s.push(url)
    assert nothing.models == [] and nothing.transfer["puts"] == 0 and nothing.generation == 2
    assert first.stored_bytes_sent > 0


def test_pull_of_one_model_fetches_its_blocks_and_references_only(tmp_path, url):
    fam = family()
    publish(tmp_path / "a", fam, url)
    listing = {m["model"]: m for m in remote.remote_ls(url)["models"]}
    report = ts.pull(url, tmp_path / "b", ["full"])
    assert report.models == ["full"]
    # Its blocks and the references its deltas need, as stored: no other model's bytes.
    assert report.stored_bytes_fetched == listing["full"]["stored_bytes"]
    overhead = report.transfer["bytes_in"] - report.stored_bytes_fetched - report.snapshot_bytes
    assert 0 <= overhead <= remote.RANGE_GAP * report.transfer["gets"] + 200
    with ts.open(tmp_path / "b", "r") as s:
        assert list(s) == ["full"] and same(s.load_model("full"), fam["full"])


def test_a_pull_of_every_model_fetches_each_block_once(tmp_path, url):
    fam = family()
    publish(tmp_path / "a", fam, url)
    blocks = remote.remote_ls(url)["blocks"]
    report = ts.pull(url, tmp_path / "b")
    # A later model takes the blocks an earlier one of the same pull stored from the store.
    assert report.blocks_fetched == blocks and report.blocks_local > 0


def test_pull_takes_blocks_the_store_has_from_the_store(tmp_path, url):
    fam = family()
    publish(tmp_path / "a", fam, url)
    ts.pull(url, tmp_path / "b", ["base"])
    report = ts.pull(url, tmp_path / "b", ["head-only"])
    # head-only shares every tensor but its head with base: only the head's blocks move.
    assert report.blocks_local > 0
    assert report.stored_bytes_fetched <= fam["head-only"]["head"].nbytes
    again = ts.pull(url, tmp_path / "b", ["head-only", "base"])
    assert again.models == [] and again.unchanged == ["head-only", "base"] and again.blocks_fetched == 0
    with ts.open(tmp_path / "b", "r") as s:
        assert same(s.load_model("head-only"), fam["head-only"]) and s.verify().ok


def test_pull_into_a_raw_store_re_encodes_with_its_own_codec(tmp_path, url):
    fam = family()
    publish(tmp_path / "a", fam, url)
    with ts.open(tmp_path / "b", "a", codec="raw", page_size="128KiB", block_bytes="8KiB") as s:
        ts.pull(url, s)
        assert s.stats().encodings["delta"] == 0 and s.block_bytes == 8192
        assert all(same(s.load_model(n), t) for n, t in fam.items())


def test_read_through_pulls_a_missing_model_on_first_load(tmp_path, url):
    fam = family()
    publish(tmp_path / "a", fam, url)
    with ts.open(tmp_path / "node", "a", remote=url) as s:
        assert len(s) == 0
        assert np.array_equal(s.load_tensor("full", "embed"), fam["full"]["embed"])
        assert list(s) == ["full"]
        assert same(s.load_model("grown"), fam["grown"])
        assert sorted(s) == ["full", "grown"]
        with pytest.raises(ts.ModelNotFoundError, match="no model 'nope' on the remote"):
            s.load_model("nope")


def test_read_through_on_a_read_only_handle(tmp_path):
    # memory:// is per process, so the child process that pulls needs a file remote.
    url = (tmp_path / "remote").as_uri()
    fam = family()
    publish(tmp_path / "a", fam, url)
    ts.open(tmp_path / "node", "w-", **OPEN).close()
    with ts.open(tmp_path / "node", "r", remote=url) as s:
        assert same(s.load_model("head-only"), fam["head-only"])
        assert list(s) == ["head-only"]
        with pytest.raises(ts.ModelNotFoundError):
            s.load_model("nope")


def test_the_later_push_of_a_name_wins_and_other_models_stay(tmp_path, url):
    fam = family()
    publish(tmp_path / "a", {"base": fam["base"], "shared-name": fam["full"]}, url)
    publish(tmp_path / "b", {"shared-name": fam["grown"], "other": fam["head-only"]}, url)
    ts.pull(url, tmp_path / "c")
    with ts.open(tmp_path / "c", "r") as s:
        assert sorted(s) == ["base", "other", "shared-name"]
        assert same(s.load_model("shared-name"), fam["grown"])
    # The replaced version's blocks are no longer in the snapshot.
    assert remote.verify_remote(url) == []


def test_a_push_that_loses_the_race_merges_and_retries(tmp_path, url, monkeypatch):
    fam = family()
    publish(tmp_path / "a", {"base": fam["base"]}, url)
    with ts.open(tmp_path / "b", "a", **OPEN) as other:
        other.add_model("full", fam["full"])
    real = remote._read_head
    raced = []

    def read_head_then_race(objects):
        head = real(objects)
        if not raced:  # another writer moves the head after this push read it
            raced.append(1)
            with ts.open(tmp_path / "b", "r") as o:
                remote.push(o, url)
        return head

    monkeypatch.setattr(remote, "_read_head", read_head_then_race)
    with ts.open(tmp_path / "c", "a", **OPEN) as s:
        s.add_model("grown", fam["grown"])
        report = s.push(url)
    assert report.attempts == 2 and report.generation == 3
    assert {m["model"] for m in remote.remote_ls(url)["models"]} == {"base", "full", "grown"}
    assert remote.verify_remote(url) == []


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(model=st.dictionaries(st.text(min_size=1, max_size=8).filter(str.isprintable), tensors(), min_size=1, max_size=3))
def test_any_tensors_round_trip_through_a_remote(tmp_path_factory, model):
    tmp = tmp_path_factory.mktemp("prop")
    url = (tmp / "remote").as_uri()
    with ts.open(tmp / "a", "w", page_size="16KiB", block_bytes="1KiB") as s:
        s.add_model("m", model)
        s.push(url)
    ts.pull(url, tmp / "b")
    with ts.open(tmp / "b", "r") as s:
        got = s.load_model("m")
    assert got.keys() == model.keys()
    for k, v in model.items():
        assert got[k].shape == v.shape and got[k].dtype == v.dtype and bits(got[k]) == bits(v)


# -- gc -------------------------------------------------------------------------------


def test_gc_removes_what_no_recent_snapshot_needs_after_the_grace_period(tmp_path):
    url = (tmp_path / "remote").as_uri()
    fam = family()
    publish(tmp_path / "a", {"m": fam["full"], "base": fam["base"]}, url, pack_bytes=1)  # a pack per block
    publish(tmp_path / "b", {"m": fam["grown"]}, url)  # replaces m: its old blocks are garbage
    stray = b"an interrupted push's pack"
    (tmp_path / "remote" / "packs" / f"{sha256(stray)}.pack").write_bytes(stray)
    kept = remote.gc(url, grace_minutes=60)
    assert kept.deleted_packs == kept.deleted_snapshots == kept.deleted_heads == 0
    later = remote.gc(url, grace_minutes=60, now=__import__("time").time() + 2 * 3600)
    assert later.deleted_packs > 0 and later.deleted_snapshots == 1 and later.deleted_heads == 1
    assert not (tmp_path / "remote" / "packs" / f"{sha256(stray)}.pack").exists()
    assert remote.verify_remote(url) == []
    ts.pull(url, tmp_path / "c")
    with ts.open(tmp_path / "c", "r") as s:
        assert same(s.load_model("m"), fam["grown"]) and same(s.load_model("base"), fam["base"])


# -- bad inputs -----------------------------------------------------------------------


def test_unknown_scheme_is_a_one_line_value_error(tmp_path):
    with ts.open(tmp_path / "a", "a") as s:
        s.add_model("m", family()["base"])
        with pytest.raises(ts.InvalidArgumentError, match="unknown scheme ftp://") as e:
            s.push("ftp://host/x")
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)
    with pytest.raises(ts.InvalidArgumentError, match="unknown scheme"):
        ts.pull("nonsense", tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_missing_or_empty_remote(tmp_path):
    with pytest.raises(ts.RemoteNotFoundError, match="is not a directory") as e:
        ts.pull((tmp_path / "nowhere").as_uri(), tmp_path / "b")
    assert isinstance(e.value, FileNotFoundError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ts.RemoteNotFoundError, match="nothing has been pushed"):
        ts.pull((tmp_path / "empty").as_uri(), tmp_path / "b")
    assert not (tmp_path / "b").exists()  # a failed pull leaves no empty store behind


def test_unknown_model_changes_nothing(tmp_path, url):
    publish(tmp_path / "a", family(), url)
    with pytest.raises(ts.ModelNotFoundError, match="no model 'nope' on the remote"):
        ts.pull(url, tmp_path / "b", ["base", "nope"])
    assert not (tmp_path / "b").exists()


def _file_remote(tmp_path):
    url = (tmp_path / "remote").as_uri()
    publish(tmp_path / "a", family(), url)
    root = tmp_path / "remote"
    head = Head.decode(head_key(1), (root / head_key(1)).read_bytes())
    snap = Snapshot.decode(snapshot_key(head.snapshot), (root / snapshot_key(head.snapshot)).read_bytes())
    return url, root, head, snap


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_pack_is_refused_and_the_store_is_unchanged(tmp_path, damage):
    url, root, head, snap = _file_remote(tmp_path)
    with ts.open(tmp_path / "b", "a", **OPEN) as s:
        s.add_model("keep", family(1)["base"])
        before = snapshot(s)
    pack = root / pack_key(next(iter(snap.pack_sizes)))
    data = bytearray(pack.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    else:
        del data[len(data) // 3 :]
    pack.write_bytes(bytes(data))
    with pytest.raises(ts.CorruptionError, match="does not match its|does not decode|cut short") as e:
        ts.pull(url, tmp_path / "b", ["full"])
    assert "\n" not in str(e.value)
    with ts.open(tmp_path / "b", "r") as s:
        assert snapshot(s) == before
    assert remote.verify_remote(url)  # and the remote's own check names it


def test_a_damaged_snapshot_or_head_is_refused(tmp_path):
    url, root, head, snap = _file_remote(tmp_path)
    path = root / snapshot_key(head.snapshot)
    good = path.read_bytes()
    path.write_bytes(good[:-5])
    with pytest.raises(ts.CorruptionError, match="does not match its hash"):
        ts.pull(url, tmp_path / "b")
    path.write_bytes(good)
    (root / head_key(1)).write_text("{not json")
    with pytest.raises(ts.CorruptionError, match="head object .* is damaged"):
        remote.remote_ls(url)
    assert not (tmp_path / "b").exists()


def test_a_remote_of_a_newer_format_is_refused(tmp_path):
    url, root, head, snap = _file_remote(tmp_path)
    doc = json.loads((root / head_key(1)).read_text()) | {"version": 99, "generation": 2}
    (root / head_key(2)).write_text(json.dumps(doc))
    with pytest.raises(ts.RemoteFormatError, match="newer tensorstore .*format 99") as e:
        ts.pull(url, tmp_path / "b")
    assert isinstance(e.value, ValueError)
    with ts.open(tmp_path / "a", "r") as s, pytest.raises(ts.RemoteFormatError):
        s.push(url)
    assert len(list((root / "heads").iterdir())) == 2  # the push wrote no head
