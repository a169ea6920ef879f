"""LightGCN collaborative embeddings (spec 2.3; He et al. 2020) with jraph message passing.

The model is defined on a jraph `GraphsTuple` of the user-item bipartite graph (nodes = users then items,
every interaction as two directed edges, edge feature = 1/sqrt(d_u d_i)). One propagation layer is a
jraph `GraphNetwork` whose edge update scales the sender's embedding by the edge weight and whose node
update is the segment-sum of the received messages, i.e. x' = D^-1/2 A D^-1/2 x. The readout is the mean
over layers 0..L.

XLA on CPU is slow at the row gathers `x[senders]` (environment.md: ~65 ms per layer on ML-1M), so two
more propagation paths multiply by the same normalised adjacency held in CSR form: "sparse", a
`jax.experimental.sparse.BCSR` matrix (XLA's single-threaded CPU kernel, ~1.9 ms on ML-1M), and "native",
our multi-threaded FFI kernel (`native.py`, ~0.8 ms with 2 cores). The adjacency is symmetric, so their
`custom_vjp` backward is the same product applied to the cotangent. Tests hold the paths equal (values and
gradients); "auto" picks native on CPU (BCSR when no compiler is at hand) and jraph on GPU/TPU.

Training: BPR with one uniform negative per positive drawn on device (re-drawn while it hits a training
positive), L2 on the batch's layer-0 rows, Adam; one jitted `lax.scan` runs a whole epoch, its batches
sharded over the mesh's data axes. Evaluation: full-ranking Recall@K / NDCG@K excluding training items.

Cold nodes: a user or item without a training interaction has no edge, so every propagated layer of it is 0
and the layer mean would leave e0 / (L + 1), its random initialisation, as its embedding. The embeddings
returned here give such nodes zero rows instead (`zero_cold_rows`), so that what reads them (the SSL
projector's and the mixture's zero-row masks) sees "no collaborative signal" rather than a random vector,
and the result counts them (`LightGCNResult.cold_users`, `cold_items`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax
from flax import nnx
from jax.experimental import sparse as jsparse
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rallrec_jax import artifacts, console, parallel, settings
from rallrec_jax.retrieval import native

PROPAGATIONS = ("auto", "jraph", "sparse", "native")


@dataclasses.dataclass(frozen=True)
class LightGCNConfig:
    """Standard LightGCN hyper-parameters (spec 2.3 recommended defaults)."""

    dim: int = 64
    num_layers: int = 3
    lr: float = 1e-3
    l2: float = 1e-4  # weight of 0.5 * ||layer-0 rows of the batch||^2 / batch
    batch_size: int = 2048
    epochs: int = 50
    seed: int = 0
    propagation: str = "auto"  # "auto" | "jraph" | "sparse" (XLA BCSR) | "native" (threaded FFI kernel)
    native_threads: int = 0  # threads of the native kernel; 0 = every core this process may use
    init: str = "normal"  # "normal" (std init_std) | "xavier"
    init_std: float = 0.1
    neg_rejection_rounds: int = 4  # re-draws of a negative that is a training positive of its user
    eval_every: int = 1  # epochs between evaluations (when eval pairs are given); 0 = only at the end
    eval_k: int = 20
    eval_batch_users: int = 1024
    checkpoint_every: int = 5  # epochs between orbax checkpoints (when a workdir is given)

    def __post_init__(self):
        if self.propagation not in PROPAGATIONS:
            raise ValueError(f"config.propagation={self.propagation!r} is not one of {PROPAGATIONS}")
        if self.init not in ("normal", "xavier"):
            raise ValueError(f"config.init={self.init!r} is not 'normal' or 'xavier'")
        if self.native_threads < 0:
            raise ValueError(f"config.native_threads must be >= 0, got {self.native_threads}")
        for name in ("dim", "batch_size", "eval_k", "eval_batch_users", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"config.{name} must be positive, got {getattr(self, name)}")
        if self.num_layers < 0 or self.epochs < 0:
            raise ValueError("config.num_layers and config.epochs must be >= 0")


def as_config(config: LightGCNConfig | Mapping[str, Any] | None) -> LightGCNConfig:
    """Accepts the dataclass, an `ml_collections.ConfigDict` or a plain mapping."""
    return settings.from_config(LightGCNConfig, config, "LightGCN")


# ----------------------------------------------------------------------------- graph


def dedupe_interactions(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Validates and de-duplicates (user, item) pairs; returns them sorted by (user, item) as int32."""
    users = np.asarray(users)
    items = np.asarray(items)
    if users.ndim != 1 or items.ndim != 1 or users.shape != items.shape:
        raise ValueError(f"users {users.shape} and items {items.shape} must be 1-D arrays of equal length")
    if not (np.issubdtype(users.dtype, np.integer) and np.issubdtype(items.dtype, np.integer)):
        raise ValueError(f"users ({users.dtype}) and items ({items.dtype}) must be integer indices")
    if users.size and (users.min() < 0 or users.max() >= num_users):
        raise ValueError(f"users holds indices outside [0, {num_users}): min {users.min()}, max {users.max()}")
    if items.size and (items.min() < 0 or items.max() >= num_items):
        raise ValueError(f"items holds indices outside [0, {num_items}): min {items.min()}, max {items.max()}")
    keys = np.unique(users.astype(np.int64) * num_items + items.astype(np.int64))
    return (keys // num_items).astype(np.int32), (keys % num_items).astype(np.int32)


def build_graph(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int) -> jraph.GraphsTuple:
    """The bipartite interaction graph as one jraph GraphsTuple.

    Nodes 0..U-1 are users, U..U+I-1 items; each unique interaction gives the edges u->i and i->u with
    feature 1/sqrt(d_u d_i) (shape [2E, 1]), so one message-passing step is D^-1/2 A D^-1/2 x.
    `nodes` is None: the embeddings are put in at propagation time.
    """
    u, i = dedupe_interactions(users, items, num_users, num_items)
    n = num_users + num_items
    item_nodes = i + num_users
    senders = np.concatenate([u, item_nodes]).astype(np.int32)  # [2E]
    receivers = np.concatenate([item_nodes, u]).astype(np.int32)  # [2E]
    degree = np.bincount(receivers, minlength=n).astype(np.float64)  # [N]; symmetric graph: in = out
    weight = 1.0 / np.sqrt(degree[senders] * degree[receivers])  # [2E]
    return jraph.GraphsTuple(
        nodes=None,
        edges=jnp.asarray(weight[:, None], jnp.float32),
        senders=jnp.asarray(senders),
        receivers=jnp.asarray(receivers),
        globals=None,
        n_node=jnp.asarray([n], jnp.int32),
        n_edge=jnp.asarray([senders.size], jnp.int32),
    )


def graph_to_bcsr(graph: jraph.GraphsTuple) -> jsparse.BCSR:
    """The graph's normalised adjacency as an [N, N] BCSR matrix, row = receiver, column = sender."""
    senders = np.asarray(graph.senders)
    receivers = np.asarray(graph.receivers)
    weight = np.asarray(graph.edges).reshape(-1)
    n = int(np.asarray(graph.n_node).sum())
    order = np.lexsort((senders, receivers))  # row-major
    indptr = np.concatenate([[0], np.cumsum(np.bincount(receivers, minlength=n))]).astype(np.int32)
    return jsparse.BCSR(
        (jnp.asarray(weight[order], jnp.float32), jnp.asarray(senders[order], jnp.int32), jnp.asarray(indptr)),
        shape=(n, n),
    )


# ----------------------------------------------------------------------------- propagation


def _message(edges, sent_attributes, received_attributes, global_edge_attributes):
    del received_attributes, global_edge_attributes
    return sent_attributes * edges  # [2E, D] * [2E, 1]


def _receive(nodes, sent_attributes, received_attributes, global_attributes):
    del nodes, sent_attributes, global_attributes
    return received_attributes  # [N, D]: segment_sum of messages over receivers


_LAYER = jraph.GraphNetwork(update_edge_fn=_message, update_node_fn=_receive)


def propagate_jraph(graph: jraph.GraphsTuple, x: jax.Array) -> jax.Array:
    """One LightGCN layer by jraph message passing: [N, D] -> [N, D]."""
    return _LAYER(graph._replace(nodes=x)).nodes


@jax.custom_vjp
def _sym_spmm(data: jax.Array, indices: jax.Array, indptr: jax.Array, x: jax.Array) -> jax.Array:
    return jsparse.BCSR((data, indices, indptr), shape=(x.shape[0], x.shape[0])) @ x


def _sym_spmm_fwd(data, indices, indptr, x):
    return _sym_spmm(data, indices, indptr, x), (data, indices, indptr)


def _sym_spmm_bwd(residuals, g):
    data, indices, indptr = residuals
    # A is symmetric, so A^T g = A g: the same CSR product, no transpose needed.
    return None, None, None, jsparse.BCSR((data, indices, indptr), shape=(g.shape[0], g.shape[0])) @ g


_sym_spmm.defvjp(_sym_spmm_fwd, _sym_spmm_bwd)


def propagate_sparse(adj: jsparse.BCSR, x: jax.Array) -> jax.Array:
    """One LightGCN layer as a sparse product with the symmetric normalised adjacency: [N, D] -> [N, D].

    Gradients flow to x only (the adjacency is a constant of the graph).
    """
    if adj.shape != (x.shape[0], x.shape[0]):
        raise ValueError(f"adjacency shape {adj.shape} does not match embeddings {x.shape}")
    return _sym_spmm(adj.data, adj.indices, adj.indptr, x)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NativeCsr:
    """The symmetric normalised adjacency for the native kernel: CSR arrays plus the thread count (static)."""

    data: jax.Array  # [nnz] float32
    indices: jax.Array  # [nnz] int32 column (sender) ids
    indptr: jax.Array  # [N + 1] int32 row (receiver) offsets
    threads: int = dataclasses.field(default=0, metadata={"static": True})

    @property
    def shape(self) -> tuple[int, int]:
        n = self.indptr.shape[0] - 1
        return n, n


def graph_to_native(graph: jraph.GraphsTuple, threads: int = 0) -> NativeCsr:
    """The graph's adjacency for the native kernel (the same CSR arrays as `graph_to_bcsr`), checked once."""
    adj = graph_to_bcsr(graph)
    native.check_csr(np.asarray(adj.data), np.asarray(adj.indices), np.asarray(adj.indptr), adj.shape)
    return NativeCsr(adj.data, adj.indices, adj.indptr, threads)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _sym_native(data, indices, indptr, x, threads):
    return native.csr_matmul(data, indices, indptr, x, threads)


def _sym_native_fwd(data, indices, indptr, x, threads):
    return _sym_native(data, indices, indptr, x, threads), (data, indices, indptr)


def _sym_native_bwd(threads, residuals, g):
    data, indices, indptr = residuals
    return None, None, None, native.csr_matmul(data, indices, indptr, g, threads)  # A^T g = A g


_sym_native.defvjp(_sym_native_fwd, _sym_native_bwd)


def propagate_native(adj: NativeCsr, x: jax.Array) -> jax.Array:
    """One LightGCN layer with the native threaded kernel: [N, D] -> [N, D]; gradients flow to x only."""
    if adj.shape != (x.shape[0], x.shape[0]):
        raise ValueError(f"adjacency shape {adj.shape} does not match embeddings {x.shape}")
    return _sym_native(adj.data, adj.indices, adj.indptr, x, adj.threads)


Operator = jraph.GraphsTuple | jsparse.BCSR | NativeCsr


def propagate(operator: Operator, x: jax.Array) -> jax.Array:
    if isinstance(operator, jraph.GraphsTuple):
        return propagate_jraph(operator, x)
    if isinstance(operator, jsparse.BCSR):
        return propagate_sparse(operator, x)
    if isinstance(operator, NativeCsr):
        return propagate_native(operator, x)
    raise TypeError(f"operator must be a jraph.GraphsTuple, a BCSR or a NativeCsr matrix, "
                    f"got {type(operator).__name__}")


def layer_mean(operator: Operator, e0: jax.Array, num_layers: int) -> jax.Array:
    """LightGCN readout: mean of e0, A e0, ..., A^L e0 ([N, D] -> [N, D])."""
    total, x = e0, e0
    for _ in range(num_layers):
        x = propagate(operator, x)
        total = total + x
    return total / (num_layers + 1)


def resolve_propagation(propagation: str) -> str:
    """"auto" -> "native" on CPU (or "sparse" when the native kernel cannot be built here), "jraph" on
    GPU/TPU; an explicit choice is returned as is ("native" off CPU is refused)."""
    if propagation not in PROPAGATIONS:
        raise ValueError(f"propagation={propagation!r} is not one of {PROPAGATIONS}")
    cpu = jax.default_backend() == "cpu"
    if propagation == "native":
        if not cpu:
            raise ValueError("propagation='native' is a CPU kernel; use 'jraph' (or 'auto') on GPU/TPU")
        reason = native.unavailable_reason()
        if reason is not None:
            raise native.NativeUnavailable(f"propagation='native' is unavailable: {reason}")
    if propagation != "auto":
        return propagation
    if not cpu:
        return "jraph"
    reason = native.unavailable_reason()
    if reason is not None:
        _warn_native_once(reason)
        return "sparse"
    return "native"


@functools.cache
def _warn_native_once(reason: str) -> None:
    logging.warning("LightGCN falls back to XLA's single-threaded BCSR kernel: %s", reason)


def make_operator(graph: jraph.GraphsTuple, propagation: str, threads: int = 0) -> Operator:
    """The propagation operator for "jraph", "sparse", "native", or "auto" (see `resolve_propagation`)."""
    propagation = resolve_propagation(propagation)
    if propagation == "jraph":
        return graph
    if propagation == "native":
        return graph_to_native(graph, threads)
    return graph_to_bcsr(graph)


# ----------------------------------------------------------------------------- model and loss


class LightGCN(nnx.Module):
    """Holds the layer-0 embeddings of users then items ([U+I, D]); calling it runs the propagation."""

    def __init__(self, num_users: int, num_items: int, dim: int = 64, num_layers: int = 3, *,
                 rngs: nnx.Rngs, init: str = "normal", init_std: float = 0.1):
        self.num_users, self.num_items, self.num_layers = num_users, num_items, num_layers
        shape = (num_users + num_items, dim)
        if init == "normal":
            value = init_std * jax.random.normal(rngs.params(), shape, jnp.float32)
        elif init == "xavier":
            value = jax.nn.initializers.xavier_uniform()(rngs.params(), shape, jnp.float32)
        else:
            raise ValueError(f"init={init!r} is not 'normal' or 'xavier'")
        self.embedding = nnx.Param(value)

    def __call__(self, operator: Operator) -> tuple[jax.Array, jax.Array]:
        final = layer_mean(operator, self.embedding[...], self.num_layers)  # [U+I, D]
        return final[: self.num_users], final[self.num_users:]


def bpr_loss(e0: jax.Array, final: jax.Array, num_users: int, users: jax.Array, pos: jax.Array,
             neg: jax.Array, l2: float) -> jax.Array:
    """BPR loss mean(-log sigmoid(s_ui - s_uj)) + l2 * 0.5 * (|e0_u|^2 + |e0_i|^2 + |e0_j|^2) / B.

    e0, final: [U+I, D]; users/pos/neg: [B] (items as item indices, not node ids).
    """
    eu, ei, ej = final[users], final[num_users + pos], final[num_users + neg]  # [B, D] each
    diff = jnp.sum(eu * ei, -1) - jnp.sum(eu * ej, -1)  # [B]
    bpr = jnp.mean(jax.nn.softplus(-diff))
    reg = 0.5 * (jnp.sum(e0[users] ** 2) + jnp.sum(e0[num_users + pos] ** 2)
                 + jnp.sum(e0[num_users + neg] ** 2)) / users.shape[0]
    return bpr + l2 * reg


def sample_negatives(key: jax.Array, users: jax.Array, num_items: int, positive_keys: jax.Array,
                     rounds: int) -> jax.Array:
    """Uniform item per entry of `users`, re-drawn up to `rounds` times while it is a training positive.

    positive_keys: sorted int32 `user * num_items + item` of the training pairs.
    """
    def is_positive(j):
        key_ = users * num_items + j
        at = jnp.clip(jnp.searchsorted(positive_keys, key_), 0, positive_keys.shape[0] - 1)
        return positive_keys[at] == key_

    keys = jax.random.split(key, rounds + 1)
    neg = jax.random.randint(keys[0], users.shape, 0, num_items, jnp.int32)
    for r in range(rounds):
        redraw = jax.random.randint(keys[r + 1], users.shape, 0, num_items, jnp.int32)
        neg = jnp.where(is_positive(neg), redraw, neg)
    return neg


# ----------------------------------------------------------------------------- evaluation


@functools.partial(jax.jit, static_argnames=("k",))
def _topk_batch(user_emb, item_emb, train_mask, truth_mask, valid, k):
    """Sums of Recall@k and NDCG@k over the valid rows of one user batch.

    user_emb [b, D], item_emb [I, D], train_mask / truth_mask [b, I] bool, valid [b] bool.
    """
    scores = jnp.where(train_mask, -jnp.inf, user_emb @ item_emb.T)  # [b, I]
    _, top = jax.lax.top_k(scores, k)  # [b, k]
    hits = jnp.take_along_axis(truth_mask, top, axis=1).astype(jnp.float32)  # [b, k]
    n_true = truth_mask.sum(1).astype(jnp.float32)  # [b]
    discount = 1.0 / jnp.log2(jnp.arange(k, dtype=jnp.float32) + 2.0)  # [k]
    dcg = hits @ discount
    idcg = jnp.cumsum(discount)[jnp.clip(n_true.astype(jnp.int32), 1, k) - 1]
    recall = hits.sum(1) / jnp.maximum(n_true, 1.0)
    ndcg = dcg / idcg
    return jnp.sum(jnp.where(valid, recall, 0.0)), jnp.sum(jnp.where(valid, ndcg, 0.0))


def _csr_rows(users: np.ndarray, items: np.ndarray, num_users: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(users, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=num_users))])
    return indptr, items[order]


def topk_metrics(user_emb: np.ndarray, item_emb: np.ndarray, train_pairs: tuple[np.ndarray, np.ndarray],
                 eval_pairs: tuple[np.ndarray, np.ndarray], k: int = 20, batch_users: int = 1024
                 ) -> dict[str, float]:
    """Full-ranking Recall@k and NDCG@k, training items of each user excluded from the ranking.

    Averaged over users with at least one held-out item not among their training items. Scores are
    `user_emb @ item_emb.T`, so a popularity baseline is user_emb = ones [U, 1], item_emb = counts [I, 1].
    """
    user_emb = np.asarray(user_emb, np.float32)
    item_emb = np.asarray(item_emb, np.float32)
    num_users, num_items = user_emb.shape[0], item_emb.shape[0]
    if k > num_items:
        raise ValueError(f"k={k} exceeds the number of items {num_items}")
    tu, ti = dedupe_interactions(*train_pairs, num_users, num_items)
    eu, ei = dedupe_interactions(*eval_pairs, num_users, num_items)
    seen = np.isin(eu.astype(np.int64) * num_items + ei, tu.astype(np.int64) * num_items + ti)
    eu, ei = eu[~seen], ei[~seen]
    if eu.size == 0:
        raise ValueError("eval_pairs holds no (user, item) pair outside the training pairs")
    t_ptr, t_items = _csr_rows(tu, ti, num_users)
    e_ptr, e_items = _csr_rows(eu, ei, num_users)
    eval_users = np.unique(eu)
    item_dev = jnp.asarray(item_emb)
    recall_sum = ndcg_sum = 0.0
    for start in range(0, eval_users.size, batch_users):
        rows = eval_users[start:start + batch_users]
        b = rows.size
        padded = np.zeros(batch_users, np.int64)
        padded[:b] = rows
        train_mask = np.zeros((batch_users, num_items), bool)
        truth_mask = np.zeros((batch_users, num_items), bool)
        for r, u in enumerate(rows):
            train_mask[r, t_items[t_ptr[u]:t_ptr[u + 1]]] = True
            truth_mask[r, e_items[e_ptr[u]:e_ptr[u + 1]]] = True
        valid = np.arange(batch_users) < b
        rs, ns = _topk_batch(jnp.asarray(user_emb[padded]), item_dev, jnp.asarray(train_mask),
                             jnp.asarray(truth_mask), jnp.asarray(valid), k)
        recall_sum += float(rs)
        ndcg_sum += float(ns)
    n = eval_users.size
    return {f"recall@{k}": recall_sum / n, f"ndcg@{k}": ndcg_sum / n, "eval_users": int(n)}


def popularity_metrics(train_pairs, eval_pairs, num_users: int, num_items: int, k: int = 20) -> dict[str, float]:
    """The same metrics for the most-popular-items ranking (training interaction counts)."""
    tu, ti = dedupe_interactions(*train_pairs, num_users, num_items)
    counts = np.bincount(ti, minlength=num_items).astype(np.float32)
    return topk_metrics(np.ones((num_users, 1), np.float32), counts[:, None], (tu, ti), eval_pairs, k)


# ----------------------------------------------------------------------------- training


@dataclasses.dataclass
class LightGCNResult:
    user_emb: np.ndarray  # [U, D] layer-mean embeddings; zero rows for users without training interactions
    item_emb: np.ndarray  # [I, D]; zero rows for items without training interactions
    metrics: list[dict[str, float]]  # one entry per epoch: epoch, loss, seconds (+ recall@k, ndcg@k)
    cold_users: int = 0  # users without a training interaction (zero rows)
    cold_items: int = 0  # items without a training interaction (zero rows)


def seen_nodes(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(user_seen [U] bool, item_seen [I] bool): which nodes have at least one training interaction."""
    user_seen = np.bincount(np.asarray(users, np.int64), minlength=num_users)[:num_users] > 0
    item_seen = np.bincount(np.asarray(items, np.int64), minlength=num_items)[:num_items] > 0
    return user_seen, item_seen


def zero_cold_rows(emb: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """emb [N, D] with the rows of nodes never seen in training set to 0 (their layer mean is e0 / (L + 1))."""
    emb = np.array(emb, copy=True)
    emb[~np.asarray(seen, bool)] = 0.0
    return emb


def _make_epoch_fn(graphdef, cfg: LightGCNConfig, num_users: int, num_items: int, num_edges: int,
                   mesh: Mesh):
    num_batches = math.ceil(num_edges / cfg.batch_size)
    grid_sharding = parallel.named_sharding(mesh, (None, "batch"))  # [num_batches, B]: B over data axes
    step_sharding = parallel.batch_sharding(mesh, 1)  # [B]

    def loss_fn(model: LightGCN, operator, u, i, j):
        e0 = model.embedding[...]
        final = layer_mean(operator, e0, model.num_layers)
        return bpr_loss(e0, final, num_users, u, i, j, cfg.l2)

    def epoch(state, key, operator, train_u, train_i, positive_keys):
        k_perm, k_neg = jax.random.split(key)
        perm = jax.random.permutation(k_perm, num_edges)  # [E]
        # Wrap around so every batch is full; [num_batches, B].
        idx = perm[jnp.arange(num_batches * cfg.batch_size) % num_edges].reshape(num_batches, cfg.batch_size)
        idx = jax.lax.with_sharding_constraint(idx, grid_sharding)
        u, i = train_u[idx], train_i[idx]
        j = sample_negatives(k_neg, u, num_items, positive_keys, cfg.neg_rejection_rounds)

        def step(state, batch):
            bu, bi, bj = (jax.lax.with_sharding_constraint(x, step_sharding) for x in batch)
            model, opt = nnx.merge(graphdef, state)
            loss, grads = nnx.value_and_grad(loss_fn)(model, operator, bu, bi, bj)
            opt.update(model, grads)
            return nnx.state((model, opt)), loss

        state, losses = jax.lax.scan(step, state, (u, i, j))
        return state, jnp.mean(losses)

    return jax.jit(epoch, donate_argnums=0)


def _embeddings_fn(graphdef):
    @jax.jit
    def embeddings(state, operator):
        model, _ = nnx.merge(graphdef, state)
        return model(operator)
    return embeddings


def _write_json_atomic(path: str, obj) -> None:
    if parallel.is_writer():  # a multi-host run's files are process 0's
        artifacts.atomic_write_json(path, obj)


def default_mesh() -> Mesh:
    """All devices on the data axes, except on CPU: one device there.

    Every device propagates the whole graph (only the BPR batch is split), so fake CPU devices sharing
    the same cores would repeat that work once per device for no gain. (In a multi-host CPU run each process
    trains on its own first device: the same seeds, the same embeddings, no collectives.)
    """
    if jax.default_backend() == "cpu":
        return parallel.make_mesh(devices=jax.local_devices()[:1])
    return parallel.make_mesh()


class LightGCNTrainer:
    """The training state of one LightGCN run, stepped one epoch at a time (train_lightgcn drives it).

    Separate from `train_lightgcn` so that a benchmark can interleave epochs with a peer implementation.
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, num_users: int, num_items: int,
                 config: LightGCNConfig | Mapping[str, Any] | None = None, mesh: Mesh | None = None):
        cfg = self.config = as_config(config)
        tu, ti = dedupe_interactions(users, items, num_users, num_items)
        if tu.size == 0:
            raise ValueError("users/items hold no interaction to train on")
        if num_users * num_items >= 2**31:
            raise ValueError(f"num_users*num_items={num_users * num_items} overflows the int32 pair keys")
        mesh = default_mesh() if mesh is None else mesh
        dp = parallel.data_parallel_size(mesh)
        if cfg.batch_size % dp:
            raise ValueError(f"config.batch_size={cfg.batch_size} is not divisible by the {dp} data-parallel devices")
        self.train_pairs = (tu, ti)
        self.num_users, self.num_items = num_users, num_items
        self.user_seen, self.item_seen = seen_nodes(tu, ti, num_users, num_items)

        graph = build_graph(tu, ti, num_users, num_items)
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.operator = jax.device_put(make_operator(graph, cfg.propagation, cfg.native_threads), self.replicated)
        self._train_u = jax.device_put(jnp.asarray(tu), self.replicated)
        self._train_i = jax.device_put(jnp.asarray(ti), self.replicated)
        self._positive_keys = jax.device_put(jnp.asarray(tu * num_items + ti, jnp.int32), self.replicated)

        model = LightGCN(num_users, num_items, cfg.dim, cfg.num_layers, rngs=nnx.Rngs(params=cfg.seed),
                         init=cfg.init, init_std=cfg.init_std)
        opt = nnx.Optimizer(model, optax.adam(cfg.lr), wrt=nnx.Param)
        self._graphdef, state = nnx.split((model, opt))
        self.state = jax.device_put(state, self.replicated)
        self._epoch_fn = _make_epoch_fn(self._graphdef, cfg, num_users, num_items, tu.size, mesh)
        self._embeddings_fn = _embeddings_fn(self._graphdef)
        self._base_key = jax.random.key(cfg.seed)

    def run_epoch(self, epoch: int) -> float:
        """One pass over the shuffled training pairs (0-based epoch seeds its shuffle and negatives)."""
        self.state, loss = self._epoch_fn(self.state, jax.random.fold_in(self._base_key, epoch), self.operator,
                                          self._train_u, self._train_i, self._positive_keys)
        return float(parallel.fetch(loss))  # blocks until the epoch is done

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """Layer-mean user [U, D] and item [I, D] embeddings; zero rows for nodes without a training interaction."""
        ue, ie = self._embeddings_fn(self.state, self.operator)
        ue, ie = parallel.fetch(ue), parallel.fetch(ie)
        return zero_cold_rows(ue, self.user_seen), zero_cold_rows(ie, self.item_seen)

    def evaluate(self, eval_pairs: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
        ue, ie = self.embeddings()
        return topk_metrics(ue, ie, self.train_pairs, eval_pairs, self.config.eval_k, self.config.eval_batch_users)

    def pure_state(self) -> dict:
        """The state as a pure dict for orbax; as numpy when the mesh is this process's alone in a multi-host
        run (orbax checkpoints no process-local jax.Array; numpy leaves it writes once, from process 0)."""
        pure = nnx.to_pure_dict(self.state)
        mine = {d.process_index for d in self.replicated.mesh.devices.flat} == {jax.process_index()}
        if jax.process_count() > 1 and mine:
            return jax.tree.map(np.asarray, pure)
        return pure

    def load_pure_state(self, restored: dict) -> None:
        nnx.replace_by_pure_dict(self.state, restored)
        self.state = jax.device_put(self.state, self.replicated)


def train_lightgcn(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int,
                   config: LightGCNConfig | Mapping[str, Any] | None = None, workdir: str | None = None,
                   eval_pairs: tuple[np.ndarray, np.ndarray] | None = None, mesh: Mesh | None = None
                   ) -> LightGCNResult:
    """Trains LightGCN on the training interactions and returns its user and item embeddings.

    users/items: int arrays [E] of training interactions (duplicates are dropped). eval_pairs: held-out
    (users, items) for Recall@K / NDCG@K every `eval_every` epochs. workdir: orbax checkpoints every
    `checkpoint_every` epochs under workdir/checkpoints (absolute path) and metrics.json; a later call
    with the same workdir resumes from the latest checkpoint. mesh: see `default_mesh`.
    """
    trainer = LightGCNTrainer(users, items, num_users, num_items, config, mesh)
    cfg = trainer.config
    metrics: list[dict[str, float]] = []
    start_epoch = 0
    manager = None
    if workdir is not None:
        import orbax.checkpoint as ocp

        workdir = os.path.abspath(workdir)
        os.makedirs(workdir, exist_ok=True)
        manager = ocp.CheckpointManager(
            os.path.join(workdir, "checkpoints"),
            options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
        )
        latest = manager.latest_step()
        if latest is not None:
            trainer.load_pure_state(manager.restore(latest, args=ocp.args.StandardRestore(trainer.pure_state())))
            start_epoch = int(latest)
            metrics_path = os.path.join(workdir, "metrics.json")
            if os.path.exists(metrics_path):
                with open(metrics_path) as f:
                    metrics = [m for m in json.load(f) if m["epoch"] <= start_epoch]
            logging.info("LightGCN resumed from epoch %d in %s", start_epoch, workdir)

    bar = console.progress(cfg.epochs, "LightGCN", initial=start_epoch, unit="epoch")
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        loss = trainer.run_epoch(epoch)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)  # drawn by update(), at tqdm's pace
        bar.update(1)
        entry = {"epoch": epoch + 1, "loss": loss, "seconds": time.perf_counter() - t0}
        last = epoch + 1 == cfg.epochs
        if eval_pairs is not None and (last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)):
            entry.update(trainer.evaluate(eval_pairs))
        metrics.append(entry)
        logging.info("LightGCN %s", entry)
        if manager is not None and ((epoch + 1) % cfg.checkpoint_every == 0 or last):
            manager.save(epoch + 1, args=ocp.args.StandardSave(trainer.pure_state()), force=True)
            manager.wait_until_finished()
            _write_json_atomic(os.path.join(workdir, "metrics.json"), metrics)
    bar.close()
    if manager is not None:
        manager.wait_until_finished()
        manager.close()

    ue, ie = trainer.embeddings()
    cold_users, cold_items = int((~trainer.user_seen).sum()), int((~trainer.item_seen).sum())
    if cold_users or cold_items:
        logging.info("LightGCN: %d users and %d items have no training interaction: zero rows", cold_users,
                     cold_items)
    return LightGCNResult(ue, ie, metrics, cold_users, cold_items)
