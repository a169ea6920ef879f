"""Self-supervised alignment of text and collaborative embeddings (spec 2.4, paper eq. 5-6).

A two-layer MLP projector maps an item's text embedding into the collaborative space; the symmetric
InfoNCE with cosine similarity pulls MLP(e_text^i) towards e_colla^i against the other items:

    L = -mean_i [ log f(t_i, c_i) / sum_v f(t_i, c_v)  +  log f(c_i, t_i) / sum_v f(c_i, t_v) ],
    f(a, b) = exp(cos(a, b) / tau),  t = MLP(e_text),  tau = 1 as written in the paper.

The negatives v range over all items (`negatives="all"`, the paper's V) or over the batch's items
(`"in_batch"`). The LightGCN embeddings are frozen. Items without a collaborative embedding (no
interactions) are masked out of anchors and negatives; they still receive e_ssl = MLP(e_text) (eq. 6),
which is what makes the SSL block useful for them.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rallrec_jax import console, parallel, settings
from rallrec_jax.retrieval.lightgcn import default_mesh

NEGATIVES = ("all", "in_batch")


@dataclasses.dataclass(frozen=True)
class SSLConfig:
    hidden: int = 512
    temperature: float = 1.0
    negatives: str = "all"  # "all": v over every valid item (paper's V); "in_batch": v over the batch
    batch_size: int = 0  # anchors per step; 0 = all valid items in one step (full batch)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 300
    seed: int = 0

    def __post_init__(self):
        if self.negatives not in NEGATIVES:
            raise ValueError(f"config.negatives={self.negatives!r} is not one of {NEGATIVES}")
        if self.temperature <= 0:
            raise ValueError(f"config.temperature must be positive, got {self.temperature}")
        if self.hidden <= 0 or self.epochs < 0 or self.batch_size < 0:
            raise ValueError("config.hidden must be positive, config.epochs and config.batch_size >= 0")


def as_config(config: SSLConfig | Mapping[str, Any] | None) -> SSLConfig:
    return settings.from_config(SSLConfig, config, "SSL")


class Projector(nnx.Module):
    """text dim -> hidden -> GELU -> colla dim (the paper's "simple two-layer MLP")."""

    def __init__(self, text_dim: int, hidden: int, out_dim: int, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(text_dim, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, out_dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x)))  # [N, text_dim] -> [N, out_dim]


def _unit(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def symmetric_info_nce(t_anchor: jax.Array, c_anchor: jax.Array, anchor_mask: jax.Array,
                       t_neg: jax.Array, c_neg: jax.Array, neg_mask: jax.Array,
                       temperature: float = 1.0) -> jax.Array:
    """Eq. 5 averaged over the valid anchors.

    t_anchor, c_anchor: [B, D] projected text / collaborative vectors of the anchors (pair i = row i);
    t_neg, c_neg: [M, D] the set V the denominators sum over (it contains the anchors themselves);
    anchor_mask [B], neg_mask [M]: False rows take no part.
    """
    ta, ca, tn, cn = _unit(t_anchor), _unit(c_anchor), _unit(t_neg), _unit(c_neg)
    pos = jnp.sum(ta * ca, -1) / temperature  # [B] cos(t_i, c_i) / tau
    neg_bias = jnp.where(neg_mask, 0.0, -jnp.inf)[None, :]  # [1, M]
    t2c = jax.nn.logsumexp(ta @ cn.T / temperature + neg_bias, axis=1)  # [B] log sum_v f(t_i, c_v)
    c2t = jax.nn.logsumexp(ca @ tn.T / temperature + neg_bias, axis=1)  # [B] log sum_v f(c_i, t_v)
    per_anchor = (t2c - pos) + (c2t - pos)
    weight = anchor_mask.astype(per_anchor.dtype)
    return jnp.sum(jnp.where(anchor_mask, per_anchor, 0.0)) / jnp.maximum(weight.sum(), 1.0)


@dataclasses.dataclass
class SSLResult:
    ssl_emb: np.ndarray  # [I, colla dim] e_ssl = MLP(e_text) for every item (eq. 6)
    losses: list[float]  # mean loss per epoch


def train_ssl(text_emb: np.ndarray, colla_emb: np.ndarray, config: SSLConfig | Mapping[str, Any] | None = None,
              valid: np.ndarray | None = None, mesh: Mesh | None = None) -> SSLResult:
    """Trains the projector with AdamW on the frozen collaborative embeddings; returns e_ssl for all items.

    text_emb [I, Dt], colla_emb [I, Dc]. valid [I] bool: items that have a collaborative embedding;
    default = rows of colla_emb that are not all zero (the official loader's zero rows for unmapped items).
    """
    cfg = as_config(config)
    text = np.asarray(text_emb, np.float32)
    colla = np.asarray(colla_emb, np.float32)
    if text.ndim != 2 or colla.ndim != 2 or text.shape[0] != colla.shape[0]:
        raise ValueError(f"text_emb {text.shape} and colla_emb {colla.shape} must be [items, dim] with equal rows")
    if not (np.isfinite(text).all() and np.isfinite(colla).all()):
        raise ValueError("text_emb or colla_emb holds non-finite values")
    num_items = text.shape[0]
    valid = np.linalg.norm(colla, axis=1) > 0 if valid is None else np.asarray(valid, bool)
    if valid.shape != (num_items,):
        raise ValueError(f"valid has shape {valid.shape}, expected ({num_items},)")
    valid_idx = np.flatnonzero(valid)
    if valid_idx.size < 2:
        raise ValueError("train_ssl needs at least two items with a collaborative embedding")

    mesh = default_mesh() if mesh is None else mesh  # one device on CPU (fake devices share the cores)
    dp = parallel.data_parallel_size(mesh)
    batch = cfg.batch_size or valid_idx.size
    batch = math.ceil(batch / dp) * dp  # anchors split evenly over the data axes (padding is masked)
    num_batches = math.ceil(valid_idx.size / batch)
    replicated = NamedSharding(mesh, PartitionSpec())
    grid_sharding = parallel.named_sharding(mesh, (None, "batch"))
    step_sharding = parallel.batch_sharding(mesh, 1)

    model = Projector(text.shape[1], cfg.hidden, colla.shape[1], rngs=nnx.Rngs(params=cfg.seed))
    opt = nnx.Optimizer(model, optax.adamw(cfg.lr, weight_decay=cfg.weight_decay), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))
    state = jax.device_put(state, replicated)
    text_d = jax.device_put(jnp.asarray(text), replicated)
    colla_d = jax.device_put(jnp.asarray(colla), replicated)
    valid_d = jax.device_put(jnp.asarray(valid), replicated)
    valid_idx_d = jax.device_put(jnp.asarray(valid_idx, jnp.int32), replicated)

    def loss_fn(model, anchors, anchor_mask):
        t_anchor = model(text_d[anchors])  # [B, Dc]
        c_anchor = colla_d[anchors]
        if cfg.negatives == "all":
            t_neg, c_neg, neg_mask = model(text_d), colla_d, valid_d  # V = every valid item
        else:
            t_neg, c_neg, neg_mask = t_anchor, c_anchor, anchor_mask
        return symmetric_info_nce(t_anchor, c_anchor, anchor_mask, t_neg, c_neg, neg_mask, cfg.temperature)

    @functools.partial(jax.jit, donate_argnums=0)
    def epoch(state, key):
        perm = jax.random.permutation(key, valid_idx_d.shape[0])
        slots = jnp.arange(num_batches * batch)
        anchors = valid_idx_d[perm[jnp.minimum(slots, perm.shape[0] - 1)]].reshape(num_batches, batch)
        masks = (slots < perm.shape[0]).reshape(num_batches, batch)
        anchors = jax.lax.with_sharding_constraint(anchors, grid_sharding)
        masks = jax.lax.with_sharding_constraint(masks, grid_sharding)

        def step(state, xs):
            a, m = (jax.lax.with_sharding_constraint(x, step_sharding) for x in xs)
            model, opt = nnx.merge(graphdef, state)
            loss, grads = nnx.value_and_grad(loss_fn)(model, a, m)
            opt.update(model, grads)
            return nnx.state((model, opt)), loss

        state, losses = jax.lax.scan(step, state, (anchors, masks))
        return state, jnp.mean(losses)

    @jax.jit
    def project(state):
        model, _ = nnx.merge(graphdef, state)
        return model(text_d)

    losses = []
    key = jax.random.key(cfg.seed)
    with console.progress(cfg.epochs, "SSL", unit="epoch") as bar:
        for e in range(cfg.epochs):
            state, loss = epoch(state, jax.random.fold_in(key, e))
            losses.append(float(loss))
            bar.update(1)
    return SSLResult(np.asarray(project(state)), losses)
