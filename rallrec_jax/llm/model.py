"""Flax NNX decoder for the Llama family (Llama 2/3/3.1, SmolLM2, DeepSeek-R1-Distill-Llama) and Qwen2.

RMSNorm, rotate-half RoPE (incl. llama3 scaling), grouped-query attention with an optional preallocated
KV cache, SwiGLU MLP, tied or untied head. Every parameter carries `logical_axes` metadata ("vocab",
"embed", "heads", "kv_heads", "mlp"); `param_shardings` maps them through `rallrec_jax.parallel` so the
same model runs on one device or on a (data, fsdp, tensor) mesh.

Masks and positions are explicit: `attention_mask[B, S]` marks real key slots (S = L without a cache,
S = cache length with one) and `positions[B, L]` the rotary positions, so left and right padding both work.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rallrec_jax import parallel
from rallrec_jax.llm.config import LlmConfig, rope_inv_freq

KVCache = tuple[tuple[jax.Array, jax.Array], ...]  # per layer (k, v), each [B, S, KV, head_dim]

_INIT = jax.nn.initializers.normal(stddev=0.02)


class Dense(nnx.Module):
    """y = x @ kernel[in, out] (+ bias); the kernel is stored [in, out] (HF's weight transposed)."""

    def __init__(self, in_features: int, out_features: int, axes: tuple[str | None, str | None], *,
                 use_bias: bool, cfg: LlmConfig, rngs: nnx.Rngs):
        self.in_features, self.out_features = in_features, out_features
        self.dtype = cfg.jnp_dtype
        self.kernel = nnx.Param(_INIT(rngs.params(), (in_features, out_features), cfg.jnp_param_dtype),
                                logical_axes=axes)
        self.bias = (nnx.Param(jnp.zeros((out_features,), cfg.jnp_param_dtype), logical_axes=(axes[1],))
                     if use_bias else None)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class RMSNorm(nnx.Module):
    """HF LlamaRMSNorm: normalise in float32, cast back, then scale."""

    def __init__(self, dim: int, cfg: LlmConfig):
        self.eps = cfg.rms_norm_eps
        self.dtype = cfg.jnp_dtype
        self.scale = nnx.Param(jnp.ones((dim,), cfg.jnp_param_dtype), logical_axes=("embed",))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(self.dtype) * x32.astype(self.dtype)


def rope_cos_sin(cfg: LlmConfig, positions: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """positions [B, L] -> cos, sin [B, L, head_dim] (frequencies repeated twice: rotate-half layout)."""
    inv = jnp.asarray(rope_inv_freq(cfg))  # [hd/2]
    freqs = positions.astype(jnp.float32)[..., None] * inv  # [B, L, hd/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)  # [B, L, hd]
    return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, L, H, hd] rotated with HF's rotate_half convention."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]


ATTN_CHUNK = 128  # query rows per attention block in prefill / full-sequence passes


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """q [B, l, H, hd], k/v [B, s, KV, hd], mask [B, l, s] -> [B, l, H*hd]; grouped-query softmax attention.

    The G query heads sharing a KV head are stacked along the query axis ([B, KV, G*l, hd]) so each score
    product is one batched matmul per KV head; softmax runs in float32.
    """
    b, l, h, hd = q.shape
    s, kv = k.shape[1], k.shape[2]
    g = h // kv
    qg = q.reshape(b, l, kv, g, hd).transpose(0, 2, 3, 1, 4).reshape(b, kv, g * l, hd)  # [B, KV, G*l, hd]
    kt = k.astype(q.dtype).transpose(0, 2, 1, 3)  # [B, KV, s, hd]
    vt = v.astype(q.dtype).transpose(0, 2, 1, 3)
    scores = jnp.einsum("bkqd,bksd->bkqs", qg, kt).astype(jnp.float32) * (hd ** -0.5)
    scores = scores.reshape(b, kv, g, l, s)
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype).reshape(b, kv, g * l, s)
    out = jnp.einsum("bkqs,bksd->bkqd", probs, vt).reshape(b, kv, g, l, hd)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, l, h * hd)


class Attention(nnx.Module):
    def __init__(self, cfg: LlmConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d, h, kv, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = Dense(d, h * hd, ("embed", "heads"), use_bias=cfg.qkv_bias, cfg=cfg, rngs=rngs)
        self.k_proj = Dense(d, kv * hd, ("embed", "kv_heads"), use_bias=cfg.qkv_bias, cfg=cfg, rngs=rngs)
        self.v_proj = Dense(d, kv * hd, ("embed", "kv_heads"), use_bias=cfg.qkv_bias, cfg=cfg, rngs=rngs)
        self.o_proj = Dense(h * hd, d, ("heads", "embed"), use_bias=cfg.o_bias, cfg=cfg, rngs=rngs)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array,
                 cache: tuple[jax.Array, jax.Array] | None, cache_index: jax.Array | None,
                 causal_prefix: bool = False):
        """causal_prefix (static): query i sits at key slot i (no cache, or a cache written from slot 0)."""
        cfg = self.cfg
        b, l, _ = x.shape
        h, kv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q = apply_rope(self.q_proj(x).reshape(b, l, h, hd), cos, sin)  # [B, L, H, hd]
        k = apply_rope(self.k_proj(x).reshape(b, l, kv, hd), cos, sin)  # [B, L, KV, hd]
        v = self.v_proj(x).reshape(b, l, kv, hd)
        if cache is not None:  # write this chunk into the preallocated [B, S, KV, hd] buffers.
            ck, cv = cache
            k = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, cache_index, 0, 0))
            v = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, cache_index, 0, 0))
            cache = (k, v)
        if causal_prefix and l > ATTN_CHUNK:
            # Query chunk [i, e) only needs key slots < e (causal): skip the masked upper blocks and keep the
            # score tensor cache-sized. On CPU this is ~3x faster than one [L, L] block at L = 512.
            out = jnp.concatenate([_attend(q[:, i:i + ATTN_CHUNK], k[:, :i + ATTN_CHUNK], v[:, :i + ATTN_CHUNK],
                                           mask[:, i:i + ATTN_CHUNK, :i + ATTN_CHUNK])
                                   for i in range(0, l, ATTN_CHUNK)], axis=1)
        else:
            out = _attend(q, k, v, mask)
        return self.o_proj(out), cache


class Mlp(nnx.Module):
    def __init__(self, cfg: LlmConfig, *, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = Dense(d, f, ("embed", "mlp"), use_bias=cfg.mlp_bias, cfg=cfg, rngs=rngs)
        self.up_proj = Dense(d, f, ("embed", "mlp"), use_bias=cfg.mlp_bias, cfg=cfg, rngs=rngs)
        self.down_proj = Dense(f, d, ("mlp", "embed"), use_bias=cfg.mlp_bias, cfg=cfg, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
    def __init__(self, cfg: LlmConfig, *, rngs: nnx.Rngs):
        self.input_norm = RMSNorm(cfg.hidden_size, cfg)
        self.attn = Attention(cfg, rngs=rngs)
        self.post_attn_norm = RMSNorm(cfg.hidden_size, cfg)
        self.mlp = Mlp(cfg, rngs=rngs)

    def __call__(self, x, cos, sin, mask, cache, cache_index, causal_prefix=False):
        a, cache = self.attn(self.input_norm(x), cos, sin, mask, cache, cache_index, causal_prefix)
        x = x + a
        return x + self.mlp(self.post_attn_norm(x)), cache


class Llm(nnx.Module):
    """Decoder-only LM. `model(tokens, positions, mask)` -> logits [B, L, V]; see `__call__` for the options."""

    def __init__(self, cfg: LlmConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.embedding = nnx.Param(_INIT(rngs.params(), (cfg.vocab_size, cfg.hidden_size), cfg.jnp_param_dtype),
                                   logical_axes=("vocab", "embed"))
        self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.final_norm = RMSNorm(cfg.hidden_size, cfg)
        self.lm_head = (None if cfg.tie_word_embeddings else
                        Dense(cfg.hidden_size, cfg.vocab_size, ("embed", "vocab"), use_bias=False, cfg=cfg, rngs=rngs))

    def hidden_states(self, tokens: jax.Array, positions: jax.Array, attention_mask: jax.Array | None = None,
                      kv_cache: KVCache | None = None, cache_index: jax.Array | int | None = None):
        """tokens, positions [B, L]; attention_mask [B, S] (True = real key slot).

        Without a cache S = L and slot i holds token i. With a cache (S = its length) the chunk is written at
        slots [cache_index, cache_index + L) and a query at slot t sees real keys at slots <= t.
        Returns (hidden [B, L, D] after the final RMSNorm, updated cache or None).
        """
        cfg = self.config
        b, l = tokens.shape
        dtype = cfg.jnp_dtype
        if kv_cache is not None:
            if cache_index is None:
                raise ValueError("kv_cache given without cache_index")
            s = kv_cache[0][0].shape[1]
            prefix = isinstance(cache_index, int) and cache_index == 0  # static zero offset
            offset = jnp.asarray(cache_index, jnp.int32)
        else:
            s, offset, prefix = l, jnp.int32(0), True
        if attention_mask is None:
            attention_mask = jnp.ones((b, s), bool)
        if attention_mask.shape != (b, s):
            raise ValueError(f"attention_mask shape {attention_mask.shape} != (batch, key slots) {(b, s)}")
        q_slot = offset + jnp.arange(l)[:, None]  # [L, 1]
        causal = jnp.arange(s)[None, :] <= q_slot  # [L, S]
        mask = causal[None] & attention_mask.astype(bool)[:, None, :]  # [B, L, S]
        cos, sin = rope_cos_sin(cfg, positions, dtype)
        x = jnp.take(self.embedding[...], tokens, axis=0).astype(dtype)  # [B, L, D]
        new_cache = []
        for i, layer in enumerate(self.layers):
            x, c = layer(x, cos, sin, mask, None if kv_cache is None else kv_cache[i], offset, prefix)
            new_cache.append(c)
        x = self.final_norm(x)
        return x, (None if kv_cache is None else tuple(new_cache))

    def head(self, hidden: jax.Array) -> jax.Array:
        """hidden [..., D] -> logits [..., V] in float32."""
        if self.lm_head is None:
            emb = self.embedding[...].astype(self.config.jnp_dtype)
            logits = jnp.einsum("...d,vd->...v", hidden, emb)
        else:
            logits = self.lm_head(hidden)
        return logits.astype(jnp.float32)

    def __call__(self, tokens: jax.Array, positions: jax.Array, attention_mask: jax.Array | None = None,
                 kv_cache: KVCache | None = None, cache_index: jax.Array | int | None = None, *,
                 logits_at: jax.Array | None = None, return_hidden: bool = False):
        """Logits [B, L, V]; with `logits_at` [B] only the head at those positions -> [B, V];
        `return_hidden` gives the final-normed hidden states instead. With a kv_cache returns (out, cache)."""
        hidden, cache = self.hidden_states(tokens, positions, attention_mask, kv_cache, cache_index)
        if return_hidden:
            out = hidden
        elif logits_at is not None:
            h = jnp.take_along_axis(hidden, logits_at.astype(jnp.int32)[:, None, None], axis=1)[:, 0]  # [B, D]
            out = self.head(h)
        else:
            out = self.head(hidden)
        return out if kv_cache is None else (out, cache)


# ----------------------------------------------------------------------------- caches, positions, sharding
def init_cache(cfg: LlmConfig, batch: int, length: int, dtype=None) -> KVCache:
    """Zeros [B, S, KV, hd] per layer for keys and values."""
    dtype = cfg.jnp_dtype if dtype is None else dtype
    shape = (batch, length, cfg.num_kv_heads, cfg.head_dim)
    return tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(cfg.num_layers))


CACHE_AXES = ("batch", "length", "kv_heads", "head_dim")


def positions_from_mask(mask: jax.Array) -> jax.Array:
    """[B, L] 0/1 mask -> rotary positions counting real tokens only (left padding gets position 0)."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def _logical_axes(var: nnx.Variable, ndim: int) -> tuple[str | None, ...]:
    axes = var.get_metadata().get("logical_axes")
    return tuple(axes) if axes is not None else (None,) * ndim


def fitted_sharding(mesh: Mesh, logical_axes: Sequence[str | None], shape: Sequence[int]) -> NamedSharding:
    """The logical sharding, with mesh axes that do not divide a dimension dropped (that dim replicated).

    Real models have sizes like 9 heads or a 49,152 vocabulary; replicating an odd dimension keeps every
    config runnable on every mesh instead of failing at load time.
    """
    spec = parallel.named_sharding(mesh, logical_axes).spec
    fitted = []
    for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
        kept, ways = [], 1
        for a in axes:
            if dim % (ways * mesh.shape[a]) == 0:
                kept.append(a)
                ways *= mesh.shape[a]
        fitted.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return NamedSharding(mesh, PartitionSpec(*fitted))


def param_shardings(state: nnx.State, mesh: Mesh):
    """A NamedSharding per variable of `state` (concrete or abstract), from its logical_axes metadata."""
    def one(var):
        shape = var.get_value().shape
        return var.replace(fitted_sharding(mesh, _logical_axes(var, len(shape)), shape))
    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def abstract_model(cfg: LlmConfig, seed: int = 0) -> Llm:
    """Shapes only (no memory): the target for weight loading."""
    return nnx.eval_shape(lambda: Llm(cfg, rngs=nnx.Rngs(seed)))


def create_model(cfg: LlmConfig, mesh: Mesh | None = None, seed: int = 0) -> Llm:
    """Randomly initialised model, each parameter created directly in its sharding when a mesh is given."""
    if mesh is None:
        return Llm(cfg, rngs=nnx.Rngs(seed))
    graphdef, abstract_state = nnx.split(abstract_model(cfg, seed))
    shardings = param_shardings(abstract_state, mesh)
    state = jax.jit(lambda: nnx.state(Llm(cfg, rngs=nnx.Rngs(seed))), out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def shard_model(model: nnx.Module, mesh: Mesh) -> nnx.Module:
    """Moves every variable of an existing model into its logical sharding on `mesh` (in place).

    One process: `jax.device_put`. Several processes (`jax.distributed`): device_put cannot target another
    process's devices, so each process, holding the full host copy, builds the global array from its own
    addressable shards."""
    state = nnx.state(model)
    shardings = param_shardings(state, mesh)
    if jax.process_count() == 1:
        nnx.update(model, jax.device_put(state, shardings))
        return model

    def put(x, sharding):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            raw = np.asarray(jax.random.key_data(x))
            arr = jax.make_array_from_callback(raw.shape, sharding, lambda idx: raw[idx])
            return jax.random.wrap_key_data(arr, impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    nnx.update(model, jax.tree.map(put, state, shardings))
    return model


def count_params(model: nnx.Module, variable_type: type = nnx.Param) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, variable_type)))


def names_of(state: nnx.State) -> Sequence[str]:
    """Dotted paths of every variable in a state ("layers.0.attn.q_proj.kernel")."""
    return [".".join(str(p) for p in path) for path, _ in nnx.to_flat_state(state)]
