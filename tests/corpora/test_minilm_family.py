"""The MiniLM family's definition, its numpy evaluator, and (where torch and the data are
present) a real build of the quick family and a check of the cached full family."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tensorstore.corpora import bert_numpy, minilm, minilm_family, spam
from tensorstore.corpora.minilm_family import FULL, QUICK


def test_full_family_covers_every_kind_of_fine_tune():
    names = [v.name for v in FULL.variants]
    assert len(set(names)) == len(names)
    assert FULL.variants[0].name == "minilm-base" and FULL.variants[0].trainable == "head"
    fine_tunes = FULL.variants[1:]
    assert len(fine_tunes) >= 8
    assert {v.trainable for v in fine_tunes} == {"head", "top1", "top2", "full"}
    assert {v.task for v in fine_tunes} == set(spam.TASKS)
    assert len({v.seed for v in FULL.variants}) == len(FULL.variants)
    assert all(set(v.folders) <= set(spam.FOLDERS) for v in FULL.variants)
    assert any(set(v.folders) != set(spam.FOLDERS) for v in fine_tunes)  # a data subset too


def _fake_family(directory: Path, tensors: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray) -> float:
    """A one-model family on a tiny BERT whose ``kind`` accuracy is known: returns it."""
    rng = np.random.default_rng(1)
    tensors = tensors | {"classifier.weight": rng.standard_normal((3, 64)).astype(np.float32),
                         "classifier.bias": np.zeros(3, np.float32)}
    predicted = (bert_numpy.encode(tensors, ids, mask) @ tensors["classifier.weight"].T).argmax(axis=1)
    right = np.arange(len(ids)) < 4  # the first four rows labelled as predicted, the rest not
    kind = np.where(right, predicted, (predicted + 1) % 3)
    np.savez(directory / "heldout.npz", input_ids=ids, attention_mask=mask, labels_kind=kind,
             labels_spam=np.full(len(ids), 7))  # never a prediction: catches the wrong task's labels
    manifest = {"task": "kind", "trainable": "head", "seed": 3, "heldout_accuracy": 0.5,
                "tensors_identical_to_base": 104, "base_tensors": 104, "train_seconds": 1.0}
    (directory / "tiny.json").write_text(json.dumps(manifest))
    (directory / "family.json").write_text(json.dumps({"models": ["tiny"]}))
    from safetensors.numpy import save_file

    save_file(tensors, str(directory / "tiny.safetensors"))
    return right.mean()


def test_evaluate_scores_the_model_on_its_own_task(tmp_path, tiny_bert, batch):
    expected = _fake_family(tmp_path, tiny_bert, *batch)
    family = minilm_family.load_family(tmp_path)
    assert list(family) == ["tiny"]
    assert minilm_family.evaluate("tiny", family["tiny"], family_dir=tmp_path) == pytest.approx(expected)
    assert expected == pytest.approx(4 / 6)


def test_evaluate_rejects_an_unknown_model_naming_the_known_ones(tmp_path, tiny_bert, batch):
    _fake_family(tmp_path, tiny_bert, *batch)
    with pytest.raises(KeyError, match="known: tiny"):
        minilm_family.evaluate("nope", tiny_bert, family_dir=tmp_path)


def test_load_family_explains_how_to_build_a_missing_family(tmp_path):
    with pytest.raises(FileNotFoundError, match="minilm_family build"):
        minilm_family.load_family(tmp_path / "absent")


def test_cli_evaluate_and_summary(tmp_path, tiny_bert, batch, capsys):
    expected = _fake_family(tmp_path, tiny_bert, *batch)
    assert minilm_family.main(["evaluate", "tiny", "--family-dir", str(tmp_path)]) == 0
    assert f"held-out accuracy {expected:.4f}" in capsys.readouterr().out
    assert minilm_family.main(["summary", "--family-dir", str(tmp_path)]) == 0
    assert "| tiny | kind | head | 3 | 0.5000 | 104/104 |" in capsys.readouterr().out
    assert minilm_family.main(["evaluate", "nope", "--family-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err


# --- with torch, the corpus and the weights (skipped in CI) --------------------------------


def _require_generator_inputs() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("tokenizers")
    try:
        spam.corpus_path(download=False)
        weights = minilm.base_weights_path(download=False)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    if not (weights.parent / "tokenizer.json").exists():
        pytest.skip("the MiniLM tokenizer is not cached")


# Training three models with torch takes 25-40 s: a slow test (`make bench`); the default
# suite checks the same consistency on the cached family (the test below).
@pytest.mark.slow
def test_quick_build_writes_a_consistent_family_and_then_keeps_it(tmp_path):
    _require_generator_inputs()
    out = minilm_family.build_family(tmp_path / "quick", quick=True, log=lambda line: None)
    family = minilm_family.load_family(out)
    assert list(family) == [v.name for v in QUICK.variants]
    base = minilm.load_base()
    for variant in QUICK.variants:
        manifest = json.loads((out / f"{variant.name}.json").read_text())
        tensors = family[variant.name]
        changed = {k for k in base if tensors[k].tobytes() != base[k].tobytes()}
        assert set(manifest["changed_tensors"]) == changed
        assert manifest["tensors_identical_to_base"] == len(base) - len(changed)
        assert tensors["classifier.weight"].shape == (len(spam.TASKS[variant.task]), 384)
        # The recorded accuracy is what the numpy evaluator computes from the saved file.
        assert minilm_family.evaluate(variant.name, tensors, family_dir=out) == manifest["heldout_accuracy"]
    assert not {k for k in base if family["quick-base"][k].tobytes() != base[k].tobytes()}
    assert {k.split(".")[2] for k in json.loads((out / "quick-top1-kind.json").read_text())["changed_tensors"]} == {"5"}
    # A second build finds every model up to date and rewrites none of them.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("quick-*")}
    minilm_family.build_family(out, quick=True, log=lambda line: None)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("quick-*")} == stamps


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical, compared in place (two copies of 1 GB of tensors cost seconds)."""
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(
        np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8))


def test_cached_full_family_keeps_frozen_tensors_bit_identical():
    directory = minilm_family.default_family_dir()
    if not (directory / "family.json").exists():
        pytest.skip(f"the full MiniLM family is not built in {directory}")
    family = minilm_family.load_family()
    base = minilm.load_base()
    n_changed = {"head": 0, "top1": 16, "top2": 32}  # 16 tensors per transformer layer
    for name, tensors in family.items():
        manifest = json.loads((directory / f"{name}.json").read_text())
        changed = {k for k in base if k in tensors and not _same_bits(tensors[k], base[k])}
        assert set(manifest["changed_tensors"]) == changed, name
        if manifest["trainable"] in n_changed:
            assert len(changed) == n_changed[manifest["trainable"]], name
        else:  # full: all but the pooler and position ids, which torch never holds
            assert len(changed) == len(base) - 3, name
        assert manifest["heldout_accuracy"] > 0.6, name  # far above chance on either task
