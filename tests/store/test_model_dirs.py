"""Hugging Face model directories: add a directory as one model, export it back."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import tensorstore as ts
from tensorstore.cli import main

SMALL_FILES = {
    "config.json": b'{\n  "architectures": ["BertModel"],\n  "hidden_size": 32\n}\n',
    "generation_config.json": b'{"max_length": 20}',
    "tokenizer.json": json.dumps({"model": {"vocab": {f"tok{i}": i for i in range(500)}}}).encode(),
    "tokenizer_config.json": b'{"do_lower_case": true}',
    "special_tokens_map.json": b'{"cls_token": "[CLS]"}',
    "vocab.txt": "\n".join(["[PAD]", "[CLS]", "caf\u00e9", *map(str, range(100))]).encode(),
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
}


def make_sharded_dir(root, seed=0):
    """A save_pretrained-style directory: an index, 3 shards, config and tokenizer files."""
    rng = np.random.default_rng(seed)
    shards = {
        "model-00001-of-00003.safetensors": {
            "embeddings.word_embeddings.weight": rng.standard_normal((500, 32)).astype(np.float32),
            "embeddings.position_ids": np.arange(64, dtype=np.int64)[None],
        },
        "model-00002-of-00003.safetensors": {
            f"encoder.layer.0.{n}": rng.standard_normal((32, 32)).astype(np.float16) for n in ("query.weight", "key.weight")
        } | {"encoder.layer.0.query.bias": np.zeros(32, np.float16)},
        "model-00003-of-00003.safetensors": {
            "pooler.dense.weight": rng.standard_normal((32, 32)).astype(np.float32),
            "pooler.mask": rng.integers(0, 2, 32).astype(bool),
        },
    }
    root.mkdir(parents=True)
    weight_map = {}
    for shard, tensors in shards.items():
        save_file(tensors, str(root / shard), metadata={"format": "pt"})
        weight_map.update({n: shard for n in tensors})
    total = sum(t.nbytes for ts_ in shards.values() for t in ts_.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    for name, data in SMALL_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return shards


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def check_index(root, tensors):
    """The index names every tensor once, each in a shard that holds it and nothing else."""
    index = json.loads((root / "model.safetensors.index.json").read_text())
    weight_map = index["weight_map"]
    assert set(weight_map) == set(tensors)
    for shard in set(weight_map.values()):
        held = load_file(str(root / shard))
        assert set(held) == {n for n, s in weight_map.items() if s == shard}
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in tensors.values())
    return weight_map


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_sharded_dir_add_then_export_gives_the_same_files(tmp_path, capsys):
    shards = make_sharded_dir(tmp_path / "bert")
    tensors = {n: t for s in shards.values() for n, t in s.items()}
    store = tmp_path / "store"
    code, out, err = run(capsys, "add", store, tmp_path / "bert", "--block-bytes", "4KiB")
    assert code == 0, err
    assert "added bert" in out and f"{len(SMALL_FILES)} other files kept" in out
    with ts.open(store, "r") as s:
        assert list(s) == ["bert"] and s.load_files("bert") == SMALL_FILES

    code, out, err = run(capsys, "export", store, "bert", tmp_path / "out")
    assert code == 0, err
    assert files_under(tmp_path / "out") == files_under(tmp_path / "bert")
    for name, data in SMALL_FILES.items():
        assert (tmp_path / "out" / name).read_bytes() == data
    weight_map = check_index(tmp_path / "out", tensors)
    for shard, held in shards.items():
        back = load_file(str(tmp_path / "out" / shard))
        assert list(back) == list(held) or set(back) == set(held)
        for n, t in held.items():
            assert weight_map[n] == shard
            assert back[n].dtype == t.dtype and back[n].shape == t.shape and back[n].tobytes() == t.tobytes()
    # The shards keep their safetensors header metadata, as transformers expects ("format": "pt").
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out" / "model-00002-of-00003.safetensors"), "np") as f:
        assert f.metadata() == {"format": "pt"}


def test_export_reshards_to_a_size_limit(tmp_path, capsys):
    shards = make_sharded_dir(tmp_path / "bert")
    tensors = {n: t for s in shards.values() for n, t in s.items()}
    assert run(capsys, "add", tmp_path / "store", tmp_path / "bert")[0] == 0
    code, _, err = run(capsys, "export", tmp_path / "store", "bert", tmp_path / "out", "--max-shard-size", "4KB")
    assert code == 0, err
    weight_map = check_index(tmp_path / "out", tensors)
    names = sorted(set(weight_map.values()))
    n = len(names)
    assert n > 3 and names == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    for shard in names:
        held = load_file(str(tmp_path / "out" / shard))
        assert len(held) == 1 or sum(t.nbytes for t in held.values()) <= 4_000
        assert all(held[k].tobytes() == tensors[k].tobytes() for k in held)
    # One shard when everything fits: a single model.safetensors, no index.
    code, _, _ = run(capsys, "export", tmp_path / "store", "bert", tmp_path / "one", "--max-shard-size", "5GB")
    assert code == 0
    assert files_under(tmp_path / "one") == sorted(["model.safetensors", *SMALL_FILES])


def test_single_file_dir_round_trips(tmp_path, capsys):
    d = tmp_path / "tiny"
    d.mkdir()
    w = {"w": np.arange(12, dtype=np.float32).reshape(3, 4)}
    save_file(w, str(d / "model.safetensors"))
    (d / "config.json").write_bytes(b"{}")
    assert run(capsys, "add", tmp_path / "s", d, "--name", "t")[0] == 0
    assert run(capsys, "export", tmp_path / "s", "t", tmp_path / "out")[0] == 0
    assert files_under(tmp_path / "out") == ["config.json", "model.safetensors"]
    assert load_file(str(tmp_path / "out" / "model.safetensors"))["w"].tobytes() == w["w"].tobytes()


class _Boom:
    """Unpickling this writes a marker file: the proof that nothing was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("suffix", [".bin", ".pt"])
def test_pickled_checkpoints_are_refused_unread(tmp_path, capsys, suffix):
    marker = tmp_path / "unpickled"
    ckpt = tmp_path / f"pytorch_model{suffix}"
    ckpt.write_bytes(pickle.dumps(_Boom(marker)))
    code, _, err = run(capsys, "add", tmp_path / "s", ckpt)
    assert code == 1 and "convert it to safetensors" in err and str(ckpt) in err and len(err.splitlines()) == 1
    d = tmp_path / "hf"
    d.mkdir()
    (d / "pytorch_model.bin").write_bytes(ckpt.read_bytes())
    (d / "config.json").write_bytes(b"{}")
    code, _, err = run(capsys, "add", tmp_path / "s", d)
    assert code == 1 and "convert it to safetensors" in err and "pytorch_model.bin" in err
    assert not marker.exists()
    assert not (tmp_path / "s").exists() or len(ts.open(tmp_path / "s", "r")) == 0


def test_a_pickle_beside_safetensors_weights_is_skipped_and_said(tmp_path, capsys):
    d = tmp_path / "hf"
    d.mkdir()
    save_file({"w": np.ones(4, np.float32)}, str(d / "model.safetensors"))
    (d / "training_args.bin").write_bytes(b"\x80\x04not read")
    code, out, _ = run(capsys, "add", tmp_path / "s", d)
    assert code == 0 and "skipped training_args.bin" in out
    with ts.open(tmp_path / "s", "r") as s:
        assert s.load_files("hf") == {}


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda d: (d / "model-00002-of-00003.safetensors").unlink(), "names shard model-00002-of-00003.safetensors"),
        (lambda d: (d / "model.safetensors.index.json").write_text("{"), "not a valid safetensors index"),
        (lambda d: (d / "model.safetensors.index.json").write_text('{"weight_map": {"x": "../evil.safetensors"}}'),
         "same directory"),
    ],
)
def test_a_broken_sharded_dir_is_refused_naming_it(tmp_path, capsys, damage, needle):
    make_sharded_dir(tmp_path / "bert")
    damage(tmp_path / "bert")
    code, _, err = run(capsys, "add", tmp_path / "s", tmp_path / "bert")
    assert code == 1 and needle in err and "bert" in err and len(err.splitlines()) == 1


def test_export_refuses_a_non_empty_outdir_and_a_shard_size_for_a_file(tmp_path, capsys):
    make_sharded_dir(tmp_path / "bert")
    assert run(capsys, "add", tmp_path / "s", tmp_path / "bert")[0] == 0
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("mine")
    code, _, err = run(capsys, "export", tmp_path / "s", "bert", tmp_path / "busy")
    assert code == 1 and "not an empty directory" in err and (tmp_path / "busy" / "x").read_text() == "mine"
    code, _, err = run(capsys, "export", tmp_path / "s", "bert", tmp_path / "x.safetensors", "--max-shard-size", "5GB")
    assert code == 2 and "--max-shard-size" in err


# -- the API: files kept with a model --------------------------------------------------


def test_files_are_replaced_and_deleted_with_their_model(tmp_path):
    with ts.open(tmp_path / "s", "w") as s:
        s.add_model("a", {"w": np.ones(3)}, files={"config.json": b"1", "tok/vocab.txt": b"x"})
        s.add_model("b", {"w": np.ones(3)}, files={"config.json": b"b"})
        s.add_model("c", {"w": np.ones(3)})
        assert s.load_files("a") == {"config.json": b"1", "tok/vocab.txt": b"x"} and s.load_files("c") == {}
        s.add_model("a", {"w": np.zeros(3)}, files={"config.json": b"2"}, replace=True)
        assert s.load_files("a") == {"config.json": b"2"}
        s.delete_model("a")
        with pytest.raises(ts.ModelNotFoundError):
            s.load_files("a")
        with s.env.read() as txn:
            assert txn.stat(s.env.dbs["files"])["entries"] == 2  # b's file and b's manifest only
        assert s.catalog()["files"].select(["model", "file", "bytes"]).to_pylist() == [{"model": "b", "file": "config.json", "bytes": 1}]
        s.add_model("a", {"w": np.ones(3)})  # a new model of the old name finds no old files
        assert s.load_files("a") == {} and s.load_files("b") == {"config.json": b"b"}


@pytest.mark.parametrize("files, needle", [
    ({"../x": b""}, "relative path"), ({"/etc/x": b""}, "relative path"), ({"a//b": b""}, "relative path"),
    ({"x": "text"}, "must be bytes"), ({"": b""}, "must not be empty"), (["config.json"], "mapping"),
])
def test_bad_files_are_refused_and_the_store_is_unchanged(tmp_path, files, needle):
    with ts.open(tmp_path / "s", "w") as s:
        s.add_model("a", {"w": np.ones(3)}, files={"config.json": b"1"})
        with pytest.raises(ts.InvalidArgumentError, match=needle):
            s.add_model("a", {"w": np.zeros(3)}, files=files, replace=True)
        assert s.load_files("a") == {"config.json": b"1"} and s.load_model("a")["w"].tolist() == [1, 1, 1]
