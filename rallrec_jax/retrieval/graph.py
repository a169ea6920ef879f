"""The LightGCN user-item graph and its propagation kernels (spec 2.3; He et al. 2020), apart from training.

The graph is a jraph `GraphsTuple` of the bipartite interaction graph (nodes = users then items, every
interaction as two directed edges, edge feature = 1/sqrt(d_u d_i)). One propagation layer is a jraph
`GraphNetwork` whose edge update scales the sender's embedding by the edge weight and whose node update is
the segment-sum of the received messages, i.e. x' = D^-1/2 A D^-1/2 x. The readout is the mean over
layers 0..L (`layer_mean`).

XLA on CPU is slow at the row gathers `x[senders]` (environment.md: ~65 ms per layer on ML-1M), so two
more propagation paths multiply by the same normalised adjacency held in CSR form: "sparse", a
`jax.experimental.sparse.BCSR` matrix (XLA's single-threaded CPU kernel, ~1.9 ms on ML-1M), and "native",
our multi-threaded FFI kernel (`native.py`, ~0.8 ms with 2 cores). The adjacency is symmetric, so their
`custom_vjp` backward is the same product applied to the cotangent. Tests hold the paths equal (values and
gradients); "auto" picks native on CPU (BCSR when no compiler is at hand) and jraph on GPU/TPU.
"""
from __future__ import annotations

import dataclasses
import functools
import logging

import jax
import jax.numpy as jnp
import jraph
import numpy as np
from jax.experimental import sparse as jsparse

from rallrec_jax.metrics import dedupe_interactions
from rallrec_jax.retrieval import native

PROPAGATIONS = ("auto", "jraph", "sparse", "native")



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
