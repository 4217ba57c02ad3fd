"""A numpy forward pass of a BERT encoder, pooled the way sentence-transformers pools.

This lets the MiniLM family be evaluated without torch: the store's evaluator gets numpy
tensors named as in a Hugging Face ``BertModel`` checkpoint (``embeddings.*``,
``encoder.layer.N.*``) and returns sentence embeddings: mean of the token states over the
attention mask, then L2-normalised (all-MiniLM-L6-v2's ``Pooling`` + ``Normalize``
modules). Everything stays float32; the result matches torch's to about 1e-7.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from ..threads import default_threads

LAYER_NORM_EPS = 1e-12  # BERT's, not torch's default 1e-5
HEAD_DIM = 32  # MiniLM-L6: 384 hidden / 12 heads


def layer_count(tensors: dict[str, np.ndarray]) -> int:
    """Number of encoder layers in a checkpoint (6 for MiniLM-L6)."""
    return 1 + max(int(k.split(".")[2]) for k in tensors if k.startswith("encoder.layer."))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + np.float32(LAYER_NORM_EPS)) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact (erf) GELU, ``x * Phi(x)``, computed in place to stay fast.

    ``1 - erf(z)`` for ``z >= 0`` uses Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7,
    below float32 resolution); it is several times faster than ``scipy.special.erf``, and the
    tanh approximation of GELU would be off by ~1e-3.
    """
    z = np.abs(x) * np.float32(1 / np.sqrt(2))
    t = z * np.float32(0.3275911)
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    tail = t * np.float32(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        tail += np.float32(c)
        tail *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    tail *= z  # tail = 1 - erf(|x| / sqrt 2)
    # Phi(x) = 1 - tail/2 for x >= 0 and tail/2 for x < 0, so x * Phi(x) = relu(x) - |x| * tail/2.
    tail *= np.abs(x) * np.float32(0.5)
    return np.maximum(x, np.float32(0.0)) - tail


def _linear(x: np.ndarray, t: dict[str, np.ndarray], name: str) -> np.ndarray:
    # One 2-D GEMM: numpy runs a 3-D @ 2-D product as many small ones, several times slower.
    flat = x.reshape(-1, x.shape[-1]) @ t[f"{name}.weight"].T + t[f"{name}.bias"]
    return flat.reshape(*x.shape[:-1], -1)


def _layer(t: dict[str, np.ndarray], i: int, x: np.ndarray, pad_bias: np.ndarray) -> np.ndarray:
    p = f"encoder.layer.{i}"
    b, n, width = x.shape
    heads = width // HEAD_DIM

    def split_heads(y: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
        # Contiguous copies: numpy's stacked matmul falls back to a slow loop on strided views.
        return np.ascontiguousarray(y.reshape(b, n, heads, HEAD_DIM).transpose(order))

    q = split_heads(_linear(x, t, f"{p}.attention.self.query"), (0, 2, 1, 3))  # (b, heads, n, d)
    q *= np.float32(1 / np.sqrt(HEAD_DIM))  # scale q (n x d) rather than the scores (n x n)
    k_t = split_heads(_linear(x, t, f"{p}.attention.self.key"), (0, 2, 3, 1))  # (b, heads, d, n)
    v = split_heads(_linear(x, t, f"{p}.attention.self.value"), (0, 2, 1, 3))
    scores = q @ k_t  # softmax in place: these are the largest arrays of the pass
    scores += pad_bias
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    context = (scores @ v).transpose(0, 2, 1, 3).reshape(b, n, width)
    attn = _linear(context, t, f"{p}.attention.output.dense")
    x = _layer_norm(x + attn, t[f"{p}.attention.output.LayerNorm.weight"], t[f"{p}.attention.output.LayerNorm.bias"])
    ff = _linear(_gelu(_linear(x, t, f"{p}.intermediate.dense")), t, f"{p}.output.dense")
    return _layer_norm(x + ff, t[f"{p}.output.LayerNorm.weight"], t[f"{p}.output.LayerNorm.bias"])


def encode_batch(tensors: dict[str, np.ndarray], input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Sentence embeddings of one batch.

    Parameters
    ----------
    tensors : dict of str to ndarray
        A BERT checkpoint (float32), named as in Hugging Face's ``BertModel``.
    input_ids, attention_mask : ndarray of shape (batch, tokens)
        Token ids and the mask (1 for real tokens, 0 for padding).

    Returns
    -------
    ndarray of shape (batch, hidden), float32
        Masked mean of the last layer's token states, L2-normalised.
    """
    n = input_ids.shape[1]
    x = (
        tensors["embeddings.word_embeddings.weight"][input_ids]
        + tensors["embeddings.position_embeddings.weight"][:n]
        + tensors["embeddings.token_type_embeddings.weight"][0]  # single-segment input
    )
    x = _layer_norm(x, tensors["embeddings.LayerNorm.weight"], tensors["embeddings.LayerNorm.bias"])
    mask = attention_mask.astype(np.float32)
    # Padding keys get -inf-like scores, so they take exactly zero attention weight.
    pad_bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
    for i in range(layer_count(tensors)):
        x = _layer(tensors, i, x, pad_bias)
    pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), np.float32(1e-12))


def encode(
    tensors: dict[str, np.ndarray],
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    batch_size: int = 8,
    threads: int | None = None,
) -> np.ndarray:
    """Sentence embeddings of many sequences, in batches (see :func:`encode_batch`).

    Each batch is cut to its longest real sequence, so short inputs cost less. Batches run
    on ``threads`` threads, each with single-threaded BLAS: about half the time goes to
    softmax, GELU and LayerNorm, which numpy runs on one core only. By default as many as
    ``OMP_NUM_THREADS`` says where it is set (as torch's and BLAS's thread pools do: a Ray
    worker of one CPU sets it to 1), else one per core.
    """
    if len(input_ids) == 0:
        return np.zeros((0, tensors["embeddings.LayerNorm.weight"].shape[0]), np.float32)

    def one(start: int) -> np.ndarray:
        mask = attention_mask[start : start + batch_size]
        width = max(int(mask.sum(axis=1).max()), 1)
        return encode_batch(tensors, input_ids[start : start + batch_size, :width], mask[:, :width])

    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(threads or default_threads()) as pool:
        return np.concatenate(list(pool.map(one, range(0, len(input_ids), batch_size))))
