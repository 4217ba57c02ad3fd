"""The numpy BERT forward: checked against a slow float64 reference, no torch needed."""

from __future__ import annotations

import math

import numpy as np

from tensorstore.corpora import bert_numpy


def _reference(t: dict[str, np.ndarray], ids: np.ndarray, length: int) -> np.ndarray:
    """One sequence, float64, head by head: the textbook BERT, written independently."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    ids = ids[:length]

    def ln(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * t[f"{name}.weight"] + t[f"{name}.bias"]

    def lin(x, name):
        return x @ t[f"{name}.weight"].T + t[f"{name}.bias"]

    x = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][:length]
    x = ln(x + t["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    for i in range(bert_numpy.layer_count(t)):
        p = f"encoder.layer.{i}"
        q, k, v = (lin(x, f"{p}.attention.self.{n}") for n in ("query", "key", "value"))
        heads = []
        for h in range(x.shape[1] // 32):
            cols = slice(32 * h, 32 * (h + 1))
            s = q[:, cols] @ k[:, cols].T / math.sqrt(32)
            a = np.exp(s - s.max(1, keepdims=True))
            heads.append((a / a.sum(1, keepdims=True)) @ v[:, cols])
        x = ln(x + lin(np.concatenate(heads, 1), f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
        h1 = lin(x, f"{p}.intermediate.dense")
        gelu = h1 * 0.5 * (1 + np.vectorize(math.erf)(h1 / math.sqrt(2)))
        x = ln(x + lin(gelu, f"{p}.output.dense"), f"{p}.output.LayerNorm")
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


def test_matches_a_float64_reference_on_padded_batches(tiny_bert, batch):
    ids, mask = batch
    got = bert_numpy.encode(tiny_bert, ids, mask, batch_size=4)
    want = np.stack([_reference(tiny_bert, ids[i], int(mask[i].sum())) for i in range(len(ids))])
    assert got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-5


def test_padding_and_batching_do_not_change_an_embedding(tiny_bert, batch):
    ids, mask = batch
    short = int(mask[1].sum())
    alone = bert_numpy.encode(tiny_bert, ids[1:2, :short], mask[1:2, :short])
    in_batch = bert_numpy.encode(tiny_bert, ids, mask, batch_size=len(ids))[1]
    assert np.abs(alone[0] - in_batch).max() < 1e-6


def test_embeddings_have_unit_norm(tiny_bert, batch):
    norms = np.linalg.norm(bert_numpy.encode(tiny_bert, *batch), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-6)


def test_gelu_is_the_exact_erf_form_to_float32_precision():
    x = np.linspace(-10, 10, 20001, dtype=np.float32)
    exact = x.astype(np.float64) * 0.5 * (1 + np.vectorize(math.erf)(x.astype(np.float64) / math.sqrt(2)))
    got = bert_numpy._gelu(x)
    assert got.dtype == np.float32
    assert np.abs(got - exact).max() < 2e-6  # the tanh approximation would be ~1e-3 off


def test_layer_count_reads_the_checkpoint(tiny_bert):
    assert bert_numpy.layer_count(tiny_bert) == 2


def test_threads_keep_batches_in_order_and_bits_unchanged(tiny_bert, batch):
    ids, mask = batch
    one = bert_numpy.encode(tiny_bert, ids, mask, batch_size=2, threads=1)
    many = bert_numpy.encode(tiny_bert, ids, mask, batch_size=2, threads=3)
    assert one.tobytes() == many.tobytes()
    assert bert_numpy.encode(tiny_bert, ids[:0], mask[:0]).shape == (0, 64)
