"""The torch side of the MiniLM family: agreement with numpy, freezing, determinism.

Skipped where torch is not installed (CI): torch is needed only to generate the family.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tensorstore.corpora import bert_numpy, minilm_family  # noqa: E402


def _torch_embeddings(tensors, ids, mask):
    model = minilm_family.torch_model(tensors, 2, seed=0)
    ids_t, mask_t = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))
    with torch.no_grad():
        hidden = minilm_family.torch_layers(model, minilm_family.torch_embed(model, ids_t), mask_t)
        return minilm_family.torch_pool(hidden, mask_t).numpy()


def test_numpy_forward_agrees_with_torch_on_a_tiny_bert(tiny_bert, batch):
    ids, mask = batch
    diff = np.abs(bert_numpy.encode(tiny_bert, ids, mask) - _torch_embeddings(tiny_bert, ids, mask))
    assert diff.max() < 1e-5


def test_numpy_forward_agrees_with_torch_on_minilm():
    from tensorstore.corpora import minilm

    try:
        path = minilm.base_weights_path(download=False)
    except FileNotFoundError:
        pytest.skip("the all-MiniLM-L6-v2 weights are not cached")
    from safetensors.numpy import load_file

    base = load_file(str(path))
    rng = np.random.default_rng(0)
    lengths = np.array([128, 100, 7, 64])
    mask = (np.arange(128)[None, :] < lengths[:, None]).astype(np.int8)
    ids = rng.integers(1000, 30000, (4, 128)).astype(np.int32) * mask
    ids[:, 0] = 101  # [CLS]
    diff = np.abs(bert_numpy.encode(base, ids, mask) - _torch_embeddings(base, ids, mask))
    assert diff.max() < 1e-4


def test_torch_model_round_trips_a_checkpoint_bit_for_bit(tiny_bert):
    model = minilm_family.torch_model(tiny_bert, 3, seed=0)
    out = minilm_family.export(model, tiny_bert)
    assert set(out) == set(tiny_bert) | {"classifier.weight", "classifier.bias"}
    assert all(out[k].tobytes() == tiny_bert[k].tobytes() for k in tiny_bert)
    assert out["classifier.weight"].shape == (3, 64)


def _tune(tiny_bert, batch, trainable: str, seed: int = 1, epochs: int = 3):
    ids, mask = batch
    labels = np.arange(len(ids)) % 2
    variant = minilm_family.Variant("t", "spam", trainable, seed, epochs)
    return minilm_family.fine_tune(tiny_bert, variant, ids, mask, labels, batch_size=2, log=lambda line: None)


def _changed(base, tuned):
    return {k for k in base if tuned[k].tobytes() != base[k].tobytes()}


@pytest.mark.parametrize(
    ("trainable", "changed_prefixes"),
    [("head", ()), ("top1", ("encoder.layer.1.",)), ("top2", ("encoder.layer.0.", "encoder.layer.1."))],
)
def test_only_the_trainable_layers_change(tiny_bert, batch, trainable, changed_prefixes):
    tuned = _tune(tiny_bert, batch, trainable)
    expected = {k for k in tiny_bert if k.startswith(changed_prefixes)} if changed_prefixes else set()
    assert _changed(tiny_bert, tuned) == expected
    assert tuned["classifier.weight"].shape == (2, 64)


def test_full_fine_tune_leaves_unused_embedding_rows_bit_identical(tiny_bert, batch):
    tuned = _tune(tiny_bert, batch, "full")
    word = "embeddings.word_embeddings.weight"
    used = np.unique(batch[0])  # 0 is the padding id here, never a real token
    same_rows = (tuned[word] == tiny_bert[word]).all(axis=1)
    unused = np.setdiff1d(np.arange(len(same_rows)), used)
    assert same_rows[unused].all()  # no gradient and no weight decay: untouched
    assert not same_rows[used[used > 0]].any()
    # Whole tensors survive only if torch never holds them.
    assert _changed(tiny_bert, tuned) == set(tiny_bert) - {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}


def test_fine_tuning_is_deterministic_per_seed(tiny_bert, batch):
    a, b, c = (_tune(tiny_bert, batch, "top1", seed=s, epochs=1) for s in (5, 5, 6))
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert a["classifier.weight"].tobytes() != c["classifier.weight"].tobytes()
