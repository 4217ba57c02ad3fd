"""The small files kept with a model (config.json, tokenizer files) travel with it: push
sends them as content-addressed objects, pull fetches and checks them."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

import tensorstore as ts
from tensorstore import remote
from tensorstore.cli import main
from tensorstore.errors import CorruptionError
from tensorstore.remote_format import FILE_PREFIX, file_key, sha256

CONFIG = b'{"hidden_size": 64, "architectures": ["BertModel"]}'
TOKENIZER = json.dumps({"model": {"vocab": {f"tok{i}": i for i in range(500)}}}).encode()


def model_dir(root, seed, config=CONFIG):
    """A model directory: two safetensors shards with an index, and three small files."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    shards = {"model-00001-of-00002.safetensors": {"a": rng.standard_normal((64, 64)).astype(np.float32)},
              "model-00002-of-00002.safetensors": {"b": rng.standard_normal((32, 16)).astype(np.float16)}}
    for name, tensors in shards.items():
        save_file(tensors, str(root / name), metadata={"format": "pt"})
    index = {"metadata": {"total_size": 64 * 64 * 4 + 32 * 16 * 2},
             "weight_map": {k: name for name, t in shards.items() for k in t}}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    (root / "config.json").write_bytes(config)
    (root / "tokenizer.json").write_bytes(TOKENIZER)
    (root / "sub").mkdir()
    (root / "sub" / "special_tokens_map.json").write_bytes(b'{"cls": "[CLS]"}')
    return root


def tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_pulled_model_directory_exports_identically(tmp_path, url, capsys):
    src = model_dir(tmp_path / "bert", 0)
    assert main(["add", str(tmp_path / "a"), str(src), "--block-bytes", "4KiB"]) == 0
    with ts.open(tmp_path / "a", "r") as s:
        pushed = s.push(url)
    assert pushed.models == ["bert"]
    remote.pull(url, tmp_path / "b")
    for store in ("a", "b"):
        assert main(["export", str(tmp_path / store), "bert", str(tmp_path / f"out-{store}")]) == 0
    capsys.readouterr()
    assert tree(tmp_path / "out-b") == tree(tmp_path / "out-a")
    assert {"config.json", "tokenizer.json", "sub/special_tokens_map.json"} <= set(tree(tmp_path / "out-b"))
    with ts.open(tmp_path / "b", "r") as s:
        assert s.load_files("bert")["config.json"] == CONFIG
    assert remote.verify_remote(url) == []


def test_files_are_sent_once_and_a_changed_file_is_a_changed_model(tmp_path):
    url = (tmp_path / "remote").as_uri()
    files_dir = tmp_path / "remote" / "files"
    with ts.open(tmp_path / "a", "w", block_bytes="4KiB") as s:
        from tensorstore.formats import read_model_dir

        for name, seed in (("one", 1), ("two", 2)):  # the same tokenizer and config in both
            tensors, meta, files = read_model_dir(model_dir(tmp_path / name, seed))
            s.add_model(name, tensors, meta, files=files)
        s.push(url)
        assert sorted(p.name for p in files_dir.iterdir()) == sorted(
            f"{sha256(d)}.file" for d in {CONFIG, TOKENIZER, b'{"cls": "[CLS]"}'})
        again = s.push(url)
        assert again.models == [] and again.unchanged == ["one", "two"]
        # Only a file changed: the model is pushed again, one new file object, no block.
        tensors, meta, files = read_model_dir(tmp_path / "one")
        s.add_model("one", tensors, meta, files=dict(files, **{"config.json": b'{"hidden_size": 65}'}), replace=True)
        third = s.push(url)
        assert third.models == ["one"] and third.blocks_sent == 0
        assert len(list(files_dir.iterdir())) == 4
        assert remote.gc(url, grace_minutes=0).deleted_files == 0  # "two" still uses the first config
        tensors, meta, files = read_model_dir(tmp_path / "two")
        s.add_model("two", tensors, meta, files=dict(files, **{"config.json": b'{"hidden_size": 66}'}), replace=True)
        s.push(url)
    remote.pull(url, tmp_path / "b", ["one"])
    with ts.open(tmp_path / "b", "r") as s:
        assert s.load_files("one")["config.json"] == b'{"hidden_size": 65}'
    # gc keeps what the current snapshot names, and removes the config no model uses now.
    report = remote.gc(url, grace_minutes=0)
    assert report.deleted_files == 1
    assert not (files_dir / f"{sha256(CONFIG)}.file").exists() and len(list(files_dir.iterdir())) == 4
    assert remote.verify_remote(url) == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "remove"])
def test_a_damaged_file_object_is_refused_and_the_store_is_unchanged(tmp_path, damage):
    url = (tmp_path / "remote").as_uri()
    assert main(["add", str(tmp_path / "a"), str(model_dir(tmp_path / "bert", 0)), "--block-bytes", "4KiB"]) == 0
    with ts.open(tmp_path / "a", "r") as s:
        s.push(url)
    victim = tmp_path / "remote" / file_key(sha256(CONFIG))
    if damage == "remove":
        victim.unlink()
    else:
        data = bytearray(victim.read_bytes())
        data = data[:-3] if damage == "truncate" else data[:5] + bytes([data[5] ^ 1]) + data[6:]
        victim.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="file 'config.json' of model 'bert'"):
        remote.pull(url, tmp_path / "b")
    assert not (tmp_path / "b").exists()  # the store this pull created is gone again
    problems = remote.verify_remote(url)
    assert len(problems) == 1 and "config.json" in problems[0]
    assert FILE_PREFIX == "files/"
