"""Grouped-query softmax attention: the einsum path for CPU, `jax.nn.dot_product_attention` for accelerators.

Two entry points over q [B, T, H, hd] (H a multiple of KV):

* `attend(q, k, v, mask)`: a chunk's own keys/values [B, S, KV, hd] (as the projections make them), mask
  [B, T, S]; the no-cache forward (scoring, prefill, training).
* `attend_parts(q, parts)`: several key sets at once, in the KV cache's head-major layout [B', KV, S, hd]
  (`model.KVCache`), the score matmul's operand layout, so a decode step reads its cache without a transpose;
  e.g. a prompt prefix shared by K continuations, the tokens generated so far and the chunk itself. Each part
  is attended separately and returns its output and log-sum-exp; `merge_parts` combines them exactly
  (softmax over the union of the keys), so nothing is concatenated and a shared prefix is never repeated per
  row. A part's keys may hold fewer rows than q: B = r * B', row b of q reads key row b // r (the r rows are
  folded into the query axis).

Implementations (`LlmConfig.attention_impl`): "einsum" (query-chunked einsums, the CPU path), "dot_product"
(`jax.nn.dot_product_attention`, cuDNN flash attention on GPU, its XLA reference elsewhere), "auto" (the
default: "dot_product" where the backend is GPU and dtype/head size suit cuDNN, else "einsum"). Scores,
softmax and log-sum-exps are float32 whatever the compute dtype.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from rallrec_jax.llm.config import ATTENTION_IMPLS as IMPLEMENTATIONS

ATTN_CHUNK = 128  # query rows per block in full-sequence passes (einsum path)
_NEG = jnp.finfo(jnp.float32).min


def resolve(impl: str, dtype, head_dim: int) -> str:
    """"einsum" or "dot_product" for this backend: cuDNN's flash attention needs a GPU, half precision and
    a head size that is a multiple of 8 up to 128; everything else takes the einsum path."""
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"attention_impl={impl!r} not in {IMPLEMENTATIONS}")
    if impl != "auto":
        return impl
    ok = (jax.default_backend() == "gpu" and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
          and head_dim % 8 == 0 and head_dim <= 128)
    return "dot_product" if ok else "einsum"


def _dpa_implementation() -> str:
    return "cudnn" if jax.default_backend() == "gpu" else "xla"


def _fold(q: jax.Array, rows: int) -> jax.Array:
    """q [B, T, H, hd] -> [rows, B // rows * T, H, hd]: the continuations of one key row side by side."""
    b, t, h, hd = q.shape
    return q.reshape(rows, (b // rows) * t, h, hd)


def _grouped_scores(q: jax.Array, k: jax.Array, v: jax.Array) -> tuple[jax.Array, jax.Array]:
    """q [B, T, H, hd], k/v [B, KV, S, hd] -> (scores [B, KV, G*T, S] f32, v [B, KV, S, hd]).

    The G query heads sharing a KV head are stacked along the query axis ([B, KV, G*T, hd]) so each score
    product is one batched matmul per KV head (also the form XLA compiles fastest)."""
    b, t, h, hd = q.shape
    kv = k.shape[1]
    qg = q.reshape(b, t, kv, h // kv, hd).transpose(0, 2, 3, 1, 4).reshape(b, kv, h // kv * t, hd)  # [B, KV, G*T, hd]
    scores = jnp.einsum("bkqd,bksd->bkqs", qg, k.astype(q.dtype), preferred_element_type=jnp.float32) * (hd ** -0.5)
    return scores, v.astype(q.dtype)


def _einsum_part(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """q [B, T, H, hd], k/v [B, KV, S, hd], mask [B, T or 1, S] -> (out [B, T, H, hd], lse [B, T, H] f32)."""
    b, t, h, hd = q.shape
    kv, s = k.shape[1], k.shape[2]
    g = h // kv
    scores, vt = _grouped_scores(q, k, v)  # [B, KV, G*T, S], [B, KV, S, hd]
    if mask.shape[1] == 1:
        scores = jnp.where(mask[:, None], scores, _NEG)  # one mask row for every query
    else:
        scores = jnp.where(mask[:, None, None], scores.reshape(b, kv, g, t, s), _NEG).reshape(b, kv, g * t, s)
    top = jnp.max(scores, axis=-1, keepdims=True)
    p = jnp.exp(scores - top)
    denom = jnp.sum(p, axis=-1, keepdims=True)
    lse = top[..., 0] + jnp.log(denom[..., 0])  # [B, KV, G*T]
    out = jnp.einsum("bkqs,bksd->bkqd", (p / denom).astype(q.dtype), vt)  # [B, KV, G*T, hd]
    out = out.reshape(b, kv, g, t, hd).transpose(0, 3, 1, 2, 4).reshape(b, t, h, hd)
    return out, lse.reshape(b, kv, g, t).transpose(0, 3, 1, 2).reshape(b, t, h)


def _single_key_part(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The one-key part of a decode step (the new token seeing itself): softmax over one key is 1, so the
    output is v and the log-sum-exp the score; element-wise, no matmuls. q [B, 1, H, hd], k/v [B, KV, 1, hd]."""
    b, t, h, hd = q.shape
    kv = k.shape[1]
    g = h // kv
    qg = q.reshape(b, t, kv, g, hd).astype(jnp.float32)
    k1, v1 = k[:, None, :, 0], v[:, None, :, 0]  # [B, 1, KV, hd]
    score = jnp.sum(qg * k1.astype(jnp.float32)[:, :, :, None, :], axis=-1) * (hd ** -0.5)  # [B, 1, KV, G]
    score = jnp.where(mask[:, :, :1, None], score, _NEG)
    out = jnp.broadcast_to(v1[:, :, :, None, :], (b, t, kv, g, hd)).astype(q.dtype)
    return out.reshape(b, t, h, hd), score.reshape(b, t, h)


def _dpa_part(q, k, v, mask):
    # dot_product_attention takes [B, S, KV, hd]: a head-major part is transposed back (chunks of several
    # queries only, e.g. prefix-shared scoring, once per call; decode steps take the einsum path)
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    out, lse = jax.nn.dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype),
                                            mask=jnp.broadcast_to(mask, (q.shape[0], q.shape[1], k.shape[1]))[:, None],
                                            implementation=_dpa_implementation(), return_residual=True)
    return out, lse.astype(jnp.float32)


def attend_parts(q: jax.Array, parts: Sequence[tuple[jax.Array, jax.Array, jax.Array]], impl: str = "einsum"
                 ) -> jax.Array:
    """q [B, T, H, hd] against every (k [B', KV, S, hd], v, mask [B', T' or 1, S]) part -> [B, T, H*hd].

    A part with B' < B rows is shared: query rows b = j * (B / B') + i read key row j, and its mask is
    [B', 1, S] (the same for all its queries) or [B', B/B' * T, S]."""
    b, t, h, hd = q.shape
    # A decode step (one query per row) reads the head-major cache as it lies on every backend: a flash
    # kernel gains nothing on one query, and its [B, S, KV, hd] operand would transpose the whole cache per step.
    part_fn = _einsum_part if impl == "einsum" or t == 1 else _dpa_part
    outs, lses = [], []
    for k, v, mask in parts:
        rows = k.shape[0]
        if b % rows:
            raise ValueError(f"attention part with {rows} key rows for {b} query rows")
        if rows == b and t == 1 and k.shape[2] == 1:
            out, lse = _single_key_part(q, k, v, mask)
        else:
            out, lse = part_fn(_fold(q, rows), k, v, mask)
        outs.append(out.reshape(b, t, h, hd))
        lses.append(lse.reshape(b, t, h))
    return merge_parts(outs, lses).reshape(b, t, h * hd).astype(q.dtype)


def merge_parts(outs: Sequence[jax.Array], lses: Sequence[jax.Array]) -> jax.Array:
    """Softmax-weighted union of separately normalised attention parts: out [B, T, H, hd] each, lse [B, T, H].

    softmax over all keys = sum_i exp(lse_i - lse) * out_i with lse = logsumexp_i(lse_i)."""
    if len(outs) == 1:
        return outs[0]
    lse = jnp.stack(lses)  # [P, B, T, H]
    total = jax.nn.logsumexp(lse, axis=0)
    weights = jnp.exp(lse - total)[..., None]  # [P, B, T, H, 1]
    return sum(w * o.astype(jnp.float32) for w, o in zip(weights, outs))


def _einsum_attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """q [B, l, H, hd], k/v [B, s, KV, hd], mask [B, l, s] -> [B, l, H*hd] (one softmax over s)."""
    b, l, h, hd = q.shape
    s, kv = k.shape[1], k.shape[2]
    g = h // kv
    scores, vt = _grouped_scores(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3))  # [B, KV, G*l, s], [B, KV, s, hd]
    scores = scores.reshape(b, kv, g, l, s)
    scores = jnp.where(mask[:, None, None], scores, _NEG)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype).reshape(b, kv, g * l, s)
    out = jnp.einsum("bkqs,bksd->bkqd", probs, vt).reshape(b, kv, g, l, hd)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, l, h * hd)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, impl: str = "einsum",
           causal_prefix: bool = True) -> jax.Array:
    """Self-attention of a chunk: q [B, L, H, hd], k/v [B, L, KV, hd], mask [B, L, L] -> [B, L, H*hd].

    causal_prefix: query i sits at key slot i, so query block [i, e) needs only keys < e; the einsum path
    then skips the masked upper blocks (on CPU ~3x faster than one [L, L] block at L = 512)."""
    b, l, h, hd = q.shape
    if impl == "dot_product":
        out = jax.nn.dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), mask=mask[:, None],
                                           implementation=_dpa_implementation())
        return out.reshape(b, l, h * hd)
    if causal_prefix and l > ATTN_CHUNK:
        return jnp.concatenate([_einsum_attend(q[:, i:i + ATTN_CHUNK], k[:, :i + ATTN_CHUNK], v[:, :i + ATTN_CHUNK],
                                               mask[:, i:i + ATTN_CHUNK, :i + ATTN_CHUNK])
                                for i in range(0, l, ATTN_CHUNK)], axis=1)
    return _einsum_attend(q, k, v, mask)
