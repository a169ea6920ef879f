"""LightGCN training (spec 2.3; He et al. 2020): the embedding model, the BPR loss, and the epoch loop.

The graph and its three propagation paths (jraph, BCSR, the native kernel) are in graph.py; the ranking
metrics (Recall@K / NDCG@K) in rallrec_jax/metrics.py; checkpoints go through rallrec_jax/checkpoint.py.

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
import json
import logging
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rallrec_jax import artifacts, checkpoint, console, parallel, settings
from rallrec_jax.metrics import dedupe_interactions, topk_metrics
from rallrec_jax.retrieval.graph import PROPAGATIONS, Operator, build_graph, layer_mean, make_operator

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
        workdir = os.path.abspath(workdir)
        os.makedirs(workdir, exist_ok=True)
        manager = checkpoint.manager(os.path.join(workdir, "checkpoints"), max_to_keep=2)
        latest = manager.latest_step()
        if latest is not None:
            trainer.load_pure_state(checkpoint.restore(manager, trainer.pure_state(), latest))
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
            checkpoint.save(manager, epoch + 1, trainer.pure_state())
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
