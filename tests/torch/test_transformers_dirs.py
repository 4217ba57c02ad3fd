"""A directory ``transformers`` wrote, through the store and back, loads in ``transformers``.

A tiny BERT with a masked-LM head (its decoder tied to the word embeddings, so the saved
files leave one of them out, as real checkpoints do) is built from a ``BertConfig`` (no
download), saved sharded with a WordPiece tokenizer, added with ``tensorstore add`` and
exported with ``tensorstore export``: as added, re-sharded smaller, and as one file.
``from_pretrained`` must load each with no missing, unexpected or mismatched keys, and the
model must give bit-identical outputs on a fixed input.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (the test extra installs the CPU build)")
transformers = pytest.importorskip("transformers", reason="transformers is not installed (the test extra installs it)")

from tensorstore.cli import main  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"w{i}" for i in range(40)), "store", "the", "weights", "##s"]
TEXT = ["store the weights", "w1 w2 w3 stores"]


def _cli(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _tiny_bert(dtype: torch.dtype):
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=64, type_vocab_size=2,
    )
    return transformers.BertForMaskedLM(config).to(dtype).eval()


def _outputs(model, tokenizer) -> torch.Tensor:
    batch = tokenizer(TEXT, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_from_pretrained_loads_every_export_bit_identical(tmp_path, capsys, dtype):
    src = tmp_path / "tiny-bert"
    model = _tiny_bert(dtype)
    model.save_pretrained(src, max_shard_size="15KB")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    tokenizer.save_pretrained(src)
    index = json.loads((src / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 3  # a sharded checkpoint, as the test means
    want = _outputs(model, tokenizer)
    state = model.state_dict()

    _cli(capsys, "add", tmp_path / "s.ts", src)
    exports = {"as-added": [], "resharded": ["--max-shard-size", "8KB"], "one-file": ["--max-shard-size", "5GB"]}
    for name, flags in exports.items():
        _cli(capsys, "export", tmp_path / "s.ts", "tiny-bert", tmp_path / name, *flags)
    assert sorted(p.name for p in (tmp_path / "as-added").iterdir()) == sorted(p.name for p in src.iterdir())
    assert (tmp_path / "one-file" / "model.safetensors").is_file()
    resharded = json.loads((tmp_path / "resharded" / "model.safetensors.index.json").read_text())
    assert len(set(resharded["weight_map"].values())) > len(set(index["weight_map"].values()))

    for name in exports:
        out = tmp_path / name
        loaded, info = transformers.BertForMaskedLM.from_pretrained(out, output_loading_info=True, dtype="auto")
        loaded.eval()
        assert {"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"} <= info.keys()
        assert {k: list(v) for k, v in info.items()} == {k: [] for k in info}, name
        assert loaded.dtype == dtype
        got = loaded.state_dict()
        assert got.keys() == state.keys()
        for k, v in state.items():
            assert got[k].dtype == v.dtype and torch.equal(got[k].view(torch.uint8), v.view(torch.uint8)), (name, k)
        again = transformers.AutoTokenizer.from_pretrained(out)
        assert again(TEXT)["input_ids"] == tokenizer(TEXT)["input_ids"]
        assert torch.equal(_outputs(loaded, again).view(torch.uint8), want.view(torch.uint8)), name
