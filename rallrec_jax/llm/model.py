"""Flax NNX decoder for the Llama family (Llama 2/3/3.1, SmolLM2, DeepSeek-R1-Distill-Llama) and Qwen2.

RMSNorm, rotate-half RoPE (incl. llama3 scaling), grouped-query attention (`llm/attention.py`), SwiGLU MLP,
tied or untied head. Every parameter carries `logical_axes` metadata ("vocab", "embed", "heads",
"kv_heads", "mlp", "layers"); `llm/sharding.py` maps them through `rallrec_jax.parallel` so the same model
runs on one device or on a (data, fsdp, tensor) mesh.

The N decoder blocks are ONE `Block` whose every parameter has a leading layer axis ([N, ...], logical
axis "layers", never sharded), made with `nnx.vmap` over split RNG streams, and every forward runs them
with one `jax.lax.scan`: a new shape compiles one block instead of N (30 for SmolLM2, 32 for an 8B Llama).

Masks and positions are explicit: `attention_mask[B, L]` marks real tokens and `positions[B, L]` the rotary
positions, so left and right padding both work. Three forwards:

* `hidden_states`: no cache (scoring, pooling, training with `remat`; `return_kv` also hands back every
  layer's keys and values, which is a prompt's prefill);
* `extend`: a chunk that also attends to cached key sets (`KVCache`): a prompt prefix shared by K
  continuations (never repeated per row) and the tokens generated so far. It returns the chunk's own
  keys/values, which the caller writes into its cache with one in-place update after the layer scan (the
  scan only reads the caches, so XLA needs no copy of them);
* `head`: float32 logits.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from rallrec_jax.llm import attention
from rallrec_jax.llm.config import LlmConfig, rope_inv_freq
from rallrec_jax.llm.sharding import param_shardings

LAYER_AXIS = "layers"
CACHE_AXES = (LAYER_AXIS, "batch", "kv_heads", "length", "head_dim")
REMAT = ("none", "attention", "full")

_INIT = jax.nn.initializers.normal(stddev=0.02)


class KVCache(NamedTuple):
    """Keys and values of every layer, k/v [N_layers, B, KV, S, head_dim], and mask [B, S] (True = a real
    key slot). Layer-major so the layer scan reads one contiguous [B, KV, S, hd] slice per layer, and
    head-major within it because that is the operand layout of the per-KV-head score and value matmuls: with
    the slots before the heads ([B, S, KV, hd]) every decode step transposed each layer's whole cache to
    read it once (on 2 CPU cores a SmolLM2 P=4 x K=5 step ran about 9% faster without: README, Benchmarks)."""

    k: jax.Array
    v: jax.Array
    mask: jax.Array


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

    def inference_kernel(self) -> tuple[jax.Array, jax.Array | None] | None:
        """(kernel [..., in, out], bias [..., out] or None): what this layer computes at inference, for
        `Llm.fused_projections` (a LoRA-wrapped layer answers with its adapters folded in)."""
        return self.kernel[...], None if self.bias is None else self.bias[...]


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


# One layer's view of a cached key set: (k [B', KV, S, hd], v, mask [B', 1, S]).
Context = tuple[jax.Array, jax.Array, jax.Array]

# Fused projection weights (`Llm.fused_projections`), per layer inside the scan: "qkv" [D, (H + 2 KV) hd] and
# "gate_up" [D, 2 F], with "qkv_bias" / "gate_up_bias" where the model has biases.
Fused = dict[str, jax.Array]


def _fused_dot(x: jax.Array, fused: Fused, name: str, dtype) -> jax.Array:
    y = jnp.dot(x.astype(dtype), fused[name].astype(dtype))
    if name + "_bias" in fused:
        y = y + fused[name + "_bias"].astype(dtype)
    return y


class Attention(nnx.Module):
    def __init__(self, cfg: LlmConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d, h, kv, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = Dense(d, h * hd, ("embed", "heads"), use_bias=cfg.qkv_bias, cfg=cfg, rngs=rngs)
        self.k_proj = Dense(d, kv * hd, ("embed", "kv_heads"), use_bias=cfg.qkv_bias, cfg=cfg, rngs=rngs)
        self.v_proj = Dense(d, kv * hd, ("embed", "kv_heads"), use_bias=cfg.qkv_bias, cfg=cfg, rngs=rngs)
        self.o_proj = Dense(h * hd, d, ("heads", "embed"), use_bias=cfg.o_bias, cfg=cfg, rngs=rngs)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array,
                 contexts: Sequence[Context] = (), impl: str = "einsum", fused: Fused | None = None):
        """x [B, L, D]; mask [B, L, L] over the chunk itself (query i at key slot i); contexts: cached key
        sets every query also sees; fused: this layer's fused weights (one q/k/v matmul instead of three).
        -> (out [B, L, D], (k, v) [B, KV, L, hd] of the chunk, in the cache's layout; XLA drops the transpose
        where no caller collects them)."""
        cfg = self.cfg
        b, l, _ = x.shape
        h, kv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        if fused is None:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        else:
            q, k, v = jnp.split(_fused_dot(x, fused, "qkv", cfg.jnp_dtype), [h * hd, (h + kv) * hd], axis=-1)
        q = apply_rope(q.reshape(b, l, h, hd), cos, sin)  # [B, L, H, hd]
        k = apply_rope(k.reshape(b, l, kv, hd), cos, sin)  # [B, L, KV, hd]
        v = v.reshape(b, l, kv, hd)
        kt, vt = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, KV, L, hd]
        if contexts:
            out = attention.attend_parts(q, [*contexts, (kt, vt, mask)], impl)
        else:
            out = attention.attend(q, k, v, mask, impl)
        return self.o_proj(out), (kt, vt)


class Mlp(nnx.Module):
    def __init__(self, cfg: LlmConfig, *, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.dtype = cfg.jnp_dtype
        self.gate_proj = Dense(d, f, ("embed", "mlp"), use_bias=cfg.mlp_bias, cfg=cfg, rngs=rngs)
        self.up_proj = Dense(d, f, ("embed", "mlp"), use_bias=cfg.mlp_bias, cfg=cfg, rngs=rngs)
        self.down_proj = Dense(f, d, ("mlp", "embed"), use_bias=cfg.mlp_bias, cfg=cfg, rngs=rngs)

    def __call__(self, x: jax.Array, fused: Fused | None = None) -> jax.Array:
        if fused is None:
            gate, up = self.gate_proj(x), self.up_proj(x)
        else:
            gate, up = jnp.split(_fused_dot(x, fused, "gate_up", self.dtype), 2, axis=-1)  # [B, L, F] each
        return self.down_proj(jax.nn.silu(gate) * up)


class Block(nnx.Module):
    """One decoder layer; in `Llm` its parameters are stacked [N_layers, ...] and it runs per layer slice."""

    def __init__(self, cfg: LlmConfig, *, rngs: nnx.Rngs):
        self.input_norm = RMSNorm(cfg.hidden_size, cfg)
        self.attn = Attention(cfg, rngs=rngs)
        self.post_attn_norm = RMSNorm(cfg.hidden_size, cfg)
        self.mlp = Mlp(cfg, rngs=rngs)

    def __call__(self, x, cos, sin, mask, contexts: Sequence[Context] = (), impl: str = "einsum",
                 fused: Fused | None = None):
        a, kv = self.attn(self.input_norm(x), cos, sin, mask, contexts, impl, fused)
        x = x + a
        return x + self.mlp(self.post_attn_norm(x), fused), kv


def stacked_blocks(cfg: LlmConfig, rngs: nnx.Rngs) -> Block:
    """N blocks as one Block with [N, ...] parameters (each layer initialised from its own RNG split), the
    leading axis named "layers" in every variable's logical axes."""
    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, axis_size=cfg.num_layers)
    def make(layer_rngs):
        return Block(cfg, rngs=layer_rngs)

    blocks = make(rngs)
    for _, node in nnx.iter_graph(blocks):
        if isinstance(node, nnx.Variable):
            add_layer_axis(node)
    return blocks


def add_layer_axis(var: nnx.Variable) -> None:
    """Prefixes "layers" to a stacked variable's logical axes (nnx.vmap stacks values, not our metadata)."""
    ndim = len(var.get_value().shape)
    axes = tuple(var.get_metadata().get("logical_axes") or (None,) * (ndim - 1))
    if len(axes) == ndim - 1:
        var.set_metadata(logical_axes=(LAYER_AXIS,) + axes)


class Llm(nnx.Module):
    """Decoder-only LM. `model(tokens, positions, mask)` -> logits [B, L, V]; see `__call__` for the options."""

    def __init__(self, cfg: LlmConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.embedding = nnx.Param(_INIT(rngs.params(), (cfg.vocab_size, cfg.hidden_size), cfg.jnp_param_dtype),
                                   logical_axes=("vocab", "embed"))
        self.layers = stacked_blocks(cfg, rngs)
        self.final_norm = RMSNorm(cfg.hidden_size, cfg)
        self.lm_head = (None if cfg.tie_word_embeddings else
                        Dense(cfg.hidden_size, cfg.vocab_size, ("embed", "vocab"), use_bias=False, cfg=cfg, rngs=rngs))

    # ------------------------------------------------------------------ the layer scan
    def _scan_layers(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array,
                     contexts: Sequence[KVCache] = (), remat: str = "none", collect_kv: bool = False,
                     fused: Fused | None = None):
        """x [B, L, D] through every layer with one lax.scan over the stacked parameters (and the contexts'
        per-layer keys/values, and the fused projections [N, ...] if given). Returns (x, (k, v)
        [N, B, KV, L, hd] if collect_kv else None).

        Each layer slice keeps its own RNG streams (LoRA dropout): their counts come out of the scan and go
        back into the module, so a Python loop over the layer slices draws the same masks."""
        cfg = self.config
        if remat not in REMAT:
            raise ValueError(f"finetune.remat={remat!r} must be one of {REMAT}")
        impl = attention.resolve(cfg.attention_impl, cfg.jnp_dtype, cfg.head_dim)
        graphdef, state = nnx.split(self.layers)
        for c in contexts:
            if c.k.shape[0] != cfg.num_layers or x.shape[0] % c.k.shape[1]:
                raise ValueError(f"KV cache of shape {c.k.shape} does not fit {cfg.num_layers} layers and "
                                 f"{x.shape[0]} query rows")
        masks = [c.mask.astype(bool)[:, None, :] for c in contexts]  # [B', 1, S]

        def body(h, xs):
            layer_state, kvs, layer_fused = xs
            layer = nnx.merge(graphdef, layer_state)
            counts = jax.tree.leaves(nnx.state(layer, nnx.RngCount))
            parts = [(k, v, m) for (k, v), m in zip(kvs, masks)]
            h, kv = layer(h, cos, sin, mask, parts, impl, layer_fused)
            # Streams drawn from (dropout in train mode) come out with their new counts; untouched ones stay
            # as they are (the model's state may belong to an outer trace and cannot be written then).
            drawn = any(a is not b for a, b in zip(jax.tree.leaves(nnx.state(layer, nnx.RngCount)), counts))
            return h, (kv if collect_kv else None, nnx.state(layer, nnx.RngState) if drawn else None)

        if remat != "none":
            # Scanned, the backward recomputes one block per iteration and stores only the [B, L, D] carry per
            # block. (With 30 unrolled blocks XLA's CPU scheduler hoisted every checkpointed block's
            # recomputation to the start of the backward pass, so remat saved nothing.) "attention" keeps the
            # projection matmuls and recomputes scores/probabilities and element-wise ops; "full" keeps only
            # each block's input.
            policy = None if remat == "full" else jax.checkpoint_policies.dots_with_no_batch_dims_saveable
            body = jax.checkpoint(body, policy=policy, prevent_cse=False)  # the scan already stops CSE
        x, (kv, rng) = jax.lax.scan(body, x, (state, [(c.k, c.v) for c in contexts], fused))
        if rng is not None:
            nnx.update(self.layers, rng)
        return x, kv

    def _inputs(self, tokens, positions, attention_mask):
        cfg = self.config
        b, l = tokens.shape
        if attention_mask is None:
            attention_mask = jnp.ones((b, l), bool)
        if attention_mask.shape != (b, l):
            raise ValueError(f"attention_mask shape {attention_mask.shape} != tokens shape {(b, l)}")
        attention_mask = attention_mask.astype(bool)
        causal = jnp.arange(l)[None, :] <= jnp.arange(l)[:, None]  # [L, L]
        mask = causal[None] & attention_mask[:, None, :]  # [B, L, L]
        cos, sin = rope_cos_sin(cfg, positions, cfg.jnp_dtype)
        x = jnp.take(self.embedding[...], tokens, axis=0).astype(cfg.jnp_dtype)  # [B, L, D]
        return x, cos, sin, mask, attention_mask

    # ------------------------------------------------------------------ forwards
    def hidden_states(self, tokens: jax.Array, positions: jax.Array, attention_mask: jax.Array | None = None, *,
                      remat: str = "none", return_kv: bool = False):
        """tokens, positions [B, L]; attention_mask [B, L] (True = real token) -> hidden [B, L, D] after the
        final RMSNorm; with `return_kv`, (hidden, KVCache of every layer's keys/values [N, B, KV, L, hd]).

        remat (training): "none" keeps every intermediate, "attention" the projection matmuls, "full" only
        each block's input (see `_scan_layers`)."""
        x, cos, sin, mask, attention_mask = self._inputs(tokens, positions, attention_mask)
        x, kv = self._scan_layers(x, cos, sin, mask, remat=remat, collect_kv=return_kv)
        x = self.final_norm(x)
        return (x, KVCache(kv[0], kv[1], attention_mask)) if return_kv else x

    def extend(self, tokens: jax.Array, positions: jax.Array, attention_mask: jax.Array | None,
               contexts: Sequence[KVCache], fused: Fused | None = None) -> tuple[jax.Array, KVCache]:
        """A chunk tokens [B, L] that follows cached key sets: each context holds B or B / r rows (a prefix
        shared by r consecutive rows). Every chunk query sees the real slots of every context and the real
        chunk tokens up to itself; `fused` (from `fused_projections`) runs q/k/v and gate/up as one matmul
        each. -> (hidden [B, L, D], KVCache of the chunk [N, B, KV, L, hd] + its mask)."""
        x, cos, sin, mask, attention_mask = self._inputs(tokens, positions, attention_mask)
        x, kv = self._scan_layers(x, cos, sin, mask, contexts, collect_kv=True, fused=fused)
        return self.final_norm(x), KVCache(kv[0], kv[1], attention_mask)

    def fused_projections(self) -> Fused | None:
        """Every layer's q/k/v kernels side by side, [N, D, (H + 2 KV) hd], and gate/up, [N, D, 2 F] (LoRA
        adapters folded in, biases concatenated), or None when a projection is a module that cannot say what
        it computes (an adapter in training mode, with dropout, or an unknown wrapper).

        Why: a decode step multiplies only B·K rows (20 for 4 prompts x 5 traces), where on CPU a matmul costs
        about the same for 576 output columns as for 3,072, so three q/k/v and two gate/up matmuls per layer
        cost nearly three and two times one (an isolated microbenchmark; the whole step has not yet shown the
        gain: `Sampler`'s docstring). The sampler, when asked (`fuse_projections=True`), builds these once
        per generate call, outside its decode loop (a copy of about half the weights, 280 MB float32 for
        SmolLM2-135M), and every step reads them. Computed from the model's current parameters, so tuned
        adapters are always the ones used."""
        attn, mlp = self.layers.attn, self.layers.mlp
        groups = {"qkv": (attn.q_proj, attn.k_proj, attn.v_proj), "gate_up": (mlp.gate_proj, mlp.up_proj)}
        fused: Fused = {}
        for name, layers in groups.items():
            parts = [getattr(m, "inference_kernel", lambda: None)() for m in layers]
            if any(p is None for p in parts):
                return None
            fused[name] = jnp.concatenate([w for w, _ in parts], axis=-1)  # [N, D, sum of outputs]
            biases = [b for _, b in parts]
            if any(b is not None for b in biases):
                fused[name + "_bias"] = jnp.concatenate(
                    [jnp.zeros(w.shape[:-2] + w.shape[-1:], w.dtype) if b is None else b for (w, _), b in
                     zip(parts, biases)], axis=-1)
        return fused

    def head(self, hidden: jax.Array) -> jax.Array:
        """hidden [..., D] -> logits [..., V], accumulated and returned in float32."""
        dtype = self.config.jnp_dtype
        if self.lm_head is None:
            return jnp.einsum("...d,vd->...v", hidden.astype(dtype), self.embedding[...].astype(dtype),
                              preferred_element_type=jnp.float32)
        if type(self.lm_head) is Dense:
            return jnp.einsum("...d,dv->...v", hidden.astype(dtype), self.lm_head.kernel[...].astype(dtype),
                              preferred_element_type=jnp.float32)
        return self.lm_head(hidden).astype(jnp.float32)  # an adapter-wrapped head

    def __call__(self, tokens: jax.Array, positions: jax.Array, attention_mask: jax.Array | None = None, *,
                 logits_at: jax.Array | None = None, return_hidden: bool = False, remat: str = "none"):
        """Logits [B, L, V]; with `logits_at` [B] only the head at those positions -> [B, V];
        `return_hidden` gives the final-normed hidden states [B, L, D] instead."""
        hidden = self.hidden_states(tokens, positions, attention_mask, remat=remat)
        if return_hidden:
            return hidden
        if logits_at is not None:
            h = jnp.take_along_axis(hidden, logits_at.astype(jnp.int32)[:, None, None], axis=1)[:, 0]  # [B, D]
            return self.head(h)
        return self.head(hidden)


# ----------------------------------------------------------------------------- positions, construction
def positions_from_mask(mask: jax.Array) -> jax.Array:
    """[B, L] 0/1 mask -> rotary positions counting real tokens only (left padding gets position 0)."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


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


def count_params(model: nnx.Module, variable_type: type = nnx.Param) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(nnx.state(model, variable_type)))


def names_of(state: nnx.State) -> Sequence[str]:
    """Dotted paths of every variable in a state ("layers.attn.q_proj.kernel")."""
    return [".".join(str(p) for p in path) for path, _ in nnx.to_flat_state(state)]
