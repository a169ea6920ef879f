"""The unrolled reference for the scanned decoder: a Python loop over the per-layer slices of the stacked
block parameters, each slice merged into a plain `Block` and called in turn (no lax.scan anywhere)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rallrec_jax.llm.model import rope_cos_sin


def layer_slices(model) -> list:
    """model.layers' [N, ...] variables -> N Blocks holding slice i of every variable (RNG streams included)."""
    graphdef, state = nnx.split(model.layers)
    return [nnx.merge(graphdef, jax.tree.map(lambda x, i=i: x[i], state)) for i in range(model.config.num_layers)]


def unrolled_hidden(model, tokens, positions, mask=None):
    """Final-normed hidden states [B, L, D] of the no-cache forward, the layers unrolled in Python."""
    cfg = model.config
    b, l = tokens.shape
    mask = jnp.ones((b, l), bool) if mask is None else mask.astype(bool)
    causal = jnp.arange(l)[None, :] <= jnp.arange(l)[:, None]
    full = causal[None] & mask[:, None, :]  # [B, L, L]
    cos, sin = rope_cos_sin(cfg, positions, cfg.jnp_dtype)
    x = jnp.take(model.embedding[...], tokens, axis=0).astype(cfg.jnp_dtype)
    for layer in layer_slices(model):
        x, _ = layer(x, cos, sin, full)
    return model.final_norm(x)


def unrolled_logits(model, tokens, positions, mask=None):
    return model.head(unrolled_hidden(model, tokens, positions, mask))
