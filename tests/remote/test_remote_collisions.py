"""A remote proves blocks by their BLAKE3 digest, not only by their MurmurHash3 digest.

As in tests/store/test_collisions.py, the block digest is made deliberately weak (the first
64 bytes only) so that two blocks with equal heads and other tails collide, as a crafted
pair would; the stores, the remotes (obstore's in-memory and local-file stores) and BLAKE3
are real.
"""

import json
from dataclasses import replace

import pytest
import zstandard
from remote_support import family, same
from support import colliding_pair, head_only_digest, head_only_digests, snapshot

import tensorstore as ts
from tensorstore import remote
from tensorstore.digests import strong_digest
from tensorstore.remote_format import Head, Snapshot, head_key, pack_key, sha256, snapshot_key
from tensorstore.remote_objects import Objects

OPEN = dict(page_size="64KiB", block_bytes="4KiB")


@pytest.fixture
def weak_digest(monkeypatch):
    monkeypatch.setattr("tensorstore.store.block_digests", head_only_digests)
    for module in ("blockwriter", "verify", "remote"):
        monkeypatch.setattr(f"tensorstore.{module}.block_digest", head_only_digest)


def _store(path, codec, *, push_to=None, **models):
    """A store of one-tensor models; pushed to ``push_to`` if given."""
    with ts.open(path, "a", codec=codec, **OPEN) as s:
        for name, w in models.items():
            s.add_model(name, {"w": w})
        if push_to is not None:
            s.push(push_to)


def _current(url):
    objects = Objects(url)
    head = remote._read_head(objects)
    return objects, head, remote._read_snapshot(objects, head)[0]


def _publish(url, snap: Snapshot, doc_edit=None, version=None):
    """Make ``snap`` the remote's current snapshot (a new head), its document edited first."""
    objects, head, _ = _current(url)
    data = snap.encode()
    if doc_edit is not None:
        doc = json.loads(zstandard.ZstdDecompressor().decompress(data))
        doc_edit(doc)
        data = zstandard.ZstdCompressor().compress(json.dumps(doc).encode())
    name = sha256(data)
    objects.put(snapshot_key(name), data)
    head_doc = json.loads(Head(head.generation + 1, name, 0.0).encode())
    if version is not None:
        head_doc["version"] = version
    objects.put(head_key(head.generation + 1), json.dumps(head_doc).encode())


def _as_format_1(url):
    """Rewrite the remote's current snapshot as format 1 wrote it: no BLAKE3 digests."""
    _, _, snap = _current(url)

    def strip(doc):
        del doc["blocks"]["strong"]
        doc["version"] = 1

    _publish(url, snap, strip, version=1)
    assert not any(b.strong for b in _current(url)[2].blocks.values())


def _heads(url):
    return sorted(str(o["path"]) for o in Objects(url).list("heads/"))


def test_every_block_carries_the_blake3_digest_of_its_decoded_bytes(tmp_path, url):
    fam = family()
    with ts.open(tmp_path / "a", "a", **OPEN) as s:
        for name, t in fam.items():
            s.add_model(name, t)
        encodings = s.stats().encodings
        s.push(url)
    assert encodings["raw"] and encodings["delta"]  # raw blocks carry one too, not only encoded ones
    _, _, snap = _current(url)
    checked = set()
    for m in snap.models.values():
        for t in m.tensors:
            data = fam[m.name][t.name].tobytes()
            for i, d in enumerate(t.digests):
                assert snap.blocks[d].strong == strong_digest(data[i * t.step : (i + 1) * t.step])
                checked.add(d)
    assert checked == set(snap.blocks)


@pytest.mark.parametrize("codec", ["raw", "auto"])
def test_a_pulled_block_colliding_with_a_local_one_is_refused(tmp_path, url, weak_digest, codec):
    a, b = colliding_pair()
    _store(tmp_path / "a", codec, push_to=url, a=a)
    _store(tmp_path / "b", codec, mine=b)
    with ts.open(tmp_path / "b", "r") as s:
        before = snapshot(s)
    with pytest.raises(ts.HashCollisionError, match=r"block [0-9a-f]{32} .*MurmurHash3 digest of a block in this store") as e:
        ts.pull(url, tmp_path / "b")
    assert "\n" not in str(e.value)
    with ts.open(tmp_path / "b", "r") as s:
        assert snapshot(s) == before and s.verify().ok


@pytest.mark.parametrize("codec", ["raw", "auto"])
@pytest.mark.parametrize("name", ["b", "a"])  # a new model, or one "unchanged" by its digests
def test_a_pushed_block_colliding_with_one_on_the_remote_is_refused(tmp_path, url, weak_digest, codec, name):
    a, b = colliding_pair()
    _store(tmp_path / "a", codec, push_to=url, a=a)
    heads = _heads(url)
    _store(tmp_path / "b", codec, **{name: b})
    with ts.open(tmp_path / "b", "r") as s, pytest.raises(ts.HashCollisionError, match="MurmurHash3 digest of a block of this store"):
        s.push(url)
    assert _heads(url) == heads  # the head did not move
    ts.pull(url, tmp_path / "c")
    with ts.open(tmp_path / "c", "r") as s:
        assert list(s) == ["a"] and s.load_model("a")["w"].tobytes() == a.tobytes()
    assert remote.verify_remote(url) == []


def test_a_push_racing_a_colliding_push_is_refused(tmp_path, url, weak_digest, monkeypatch):
    a, b = colliding_pair()
    _store(tmp_path / "a", "raw", push_to=url, a=a)
    _store(tmp_path / "b", "raw", b=b)
    heads = _heads(url)
    real_open = remote._open_remote

    def stale(u, **kw):  # this push read the remote before the other one's head was written
        monkeypatch.setattr(remote, "_open_remote", real_open)
        return Objects(u), None, Snapshot(), 0

    monkeypatch.setattr(remote, "_open_remote", stale)
    with ts.open(tmp_path / "b", "r") as s, pytest.raises(ts.HashCollisionError, match="this push sends"):
        s.push(url)
    assert _heads(url) == heads
    assert remote.verify_remote(url) == []


def test_a_block_whose_blake3_digest_differs_is_refused_by_name(tmp_path, url, weak_digest):
    a, b = colliding_pair()
    _store(tmp_path / "a", "raw", push_to=url, a=a)
    objects, _, snap = _current(url)
    (d, block), = snap.blocks.items()
    pack = bytearray(objects.get(pack_key(block.pack)))
    pack[block.offset : block.offset + block.stored] = b.tobytes()  # other bytes, same (weak) digest
    name = sha256(pack)
    objects.put(pack_key(name), bytes(pack))
    snap.blocks[d] = replace(block, pack=name)
    snap.pack_sizes = {name: len(pack)}
    _publish(url, snap)
    with pytest.raises(ts.CorruptionError, match=f"block {d.hex()} in pack {name} does not match its BLAKE3 digest") as e:
        ts.pull(url, tmp_path / "b")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "b").exists()
    problems = remote.verify_remote(url)
    assert len(problems) == 1 and d.hex() in problems[0] and "BLAKE3" in problems[0]


def test_a_format_1_remote_is_pulled_and_pushed_to(tmp_path, url):
    fam = family()
    with ts.open(tmp_path / "a", "a", **OPEN) as s:
        s.add_model("base", fam["base"])
        s.add_model("full", fam["full"])
        s.push(url)
    _as_format_1(url)
    ts.pull(url, tmp_path / "b", ["base"])
    report = ts.pull(url, tmp_path / "b", ["full"])  # its references are local: confirmed by a fetch
    with ts.open(tmp_path / "b", "r") as s:
        assert same(s.load_model("base"), fam["base"]) and same(s.load_model("full"), fam["full"])
    assert report.blocks_local > 0
    with ts.open(tmp_path / "b", "a") as s:
        s.add_model("grown", fam["grown"])
        s.push(url)
    _, _, snap = _current(url)
    need = snap.closure(snap.models["grown"].digests())
    # The push confirmed the base's blocks it shares and records their BLAKE3 digests.
    assert all(snap.blocks[d].strong for d in need)
    assert remote.verify_remote(url) == []


def test_a_format_1_remote_colliding_with_the_local_store_is_refused(tmp_path, url, weak_digest):
    a, b = colliding_pair()
    _store(tmp_path / "a", "auto", push_to=url, a=a)
    _as_format_1(url)
    heads = _heads(url)
    _store(tmp_path / "b", "auto", mine=b, a=b)
    with ts.open(tmp_path / "b", "r") as s:
        before = snapshot(s)
    with pytest.raises(ts.HashCollisionError, match="in this store"):
        ts.pull(url, tmp_path / "b", ["a"])
    with ts.open(tmp_path / "b", "r") as s:
        assert snapshot(s) == before
        with pytest.raises(ts.HashCollisionError, match="of this store"):
            s.push(url, ["mine"])
    assert _heads(url) == heads


def test_a_snapshot_of_a_newer_format_is_refused_in_one_line(tmp_path, url):
    _store(tmp_path / "a", "auto", push_to=url, a=colliding_pair()[0])
    _publish(url, _current(url)[2], lambda doc: doc.update(version=3))
    with pytest.raises(ts.RemoteFormatError, match="newer tensorstore .*format 3; this one reads up to 2") as e:
        ts.pull(url, tmp_path / "b")
    assert "\n" not in str(e.value) and not (tmp_path / "b").exists()
