"""DeepFM (Guo et al., IJCAI 2017): the ID-based CTR baseline of the paper's Table 4, in Flax NNX.

The model sees only categorical IDs (user, item, genre, ...), one per field:

    logit = b + sum_f w[x_f]                                      (FM first order)
              + 1/2 sum_d [(sum_f e[x_f]_d)^2 - sum_f e[x_f]_d^2]    (FM second order = sum_{i<j} <e_i, e_j>)
              + MLP(concat_f e[x_f])                              (deep part, shares the embeddings)
    P(click) = sigmoid(logit)

It reads ratings only through its training labels: a user's signal is that user's ID embedding, fixed when
training ends. Ids never seen in training arrive as 0 (data/features.py), a row no training batch touches, so it
keeps its initialisation: a user first seen after the training period is scored by its item and profile fields
alone (on the quickstart's temporal split, 71% of the evaluation rows; README, "baselines").

All fields share one embedding table; field f's ids are offset by the cardinalities of fields
0..f-1, so one gather serves every field.

Training (`train_deepfm`): Adam on mean binary cross-entropy, a jitted step whose batch is sharded
over the mesh's data axes (`parallel.batch_sharding`) with replicated, donated parameters and
optimizer state; every epoch is scored on the validation split, the best epoch's parameters are
kept, and training stops after `patience` epochs without improvement. The test split is never
looked at here (the official code's early stopping on test data is spec 6.4 bug 7).

The last, partial batch of an epoch is padded to the full batch size with zero-weight rows, so the
step compiles once and every sample is used.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rallrec_jax import metrics, parallel, settings


@dataclasses.dataclass(frozen=True)
class DeepFMConfig:
    """Hyper-parameters; defaults after Guo et al. (dropout 0.5, ReLU, Adam), with a 200-200-200 MLP."""

    embed_dim: int = 16
    hidden: tuple[int, ...] = (200, 200, 200)
    dropout: float = 0.5
    embed_init_std: float = 0.01
    learning_rate: float = 1e-3
    weight_decay: float = 0.0  # decoupled (AdamW) when > 0
    batch_size: int = 1024
    eval_batch_size: int = 8192
    max_epochs: int = 20
    patience: int = 2
    early_stop_metric: str = "auc"  # "auc" (higher is better) or "logloss" (lower is better)
    seed: int = 0

    @classmethod
    def from_any(cls, config: "DeepFMConfig | Mapping[str, Any] | Any | None") -> "DeepFMConfig":
        """Accepts this dataclass, a dict, or a ConfigDict-like object with some of these fields."""
        out = settings.from_config(cls, config, "DeepFM")
        if isinstance(out.hidden, tuple):
            return out
        return dataclasses.replace(out, hidden=tuple(int(h) for h in out.hidden))  # a ConfigDict gives a list


def fm_second_order(emb: jax.Array) -> jax.Array:
    """Sum over field pairs i < j of <e_i, e_j>, in O(F D): [B, F, D] -> [B]."""
    square_of_sum = jnp.square(jnp.sum(emb, axis=1))  # [B, D]
    sum_of_square = jnp.sum(jnp.square(emb), axis=1)  # [B, D]
    return 0.5 * jnp.sum(square_of_sum - sum_of_square, axis=1)  # [B]


class DeepFM(nnx.Module):
    """DeepFM over `len(field_cardinalities)` categorical fields; `__call__` returns logits [B]."""

    def __init__(self, field_cardinalities: Sequence[int], config: DeepFMConfig | None = None, *, rngs: nnx.Rngs):
        config = config or DeepFMConfig()
        cards = [int(c) for c in field_cardinalities]
        if not cards or min(cards) < 1:
            raise ValueError(f"field_cardinalities must be positive, got {list(field_cardinalities)}")
        self.num_fields = len(cards)
        self.field_cardinalities = tuple(cards)
        self.offsets = nnx.Variable(jnp.asarray(np.concatenate([[0], np.cumsum(cards)[:-1]]), jnp.int32))  # [F]
        total = int(sum(cards))
        init = nnx.initializers.normal(config.embed_init_std)
        self.embed = nnx.Embed(total, config.embed_dim, embedding_init=init, rngs=rngs)  # second order + deep
        self.linear = nnx.Embed(total, 1, embedding_init=init, rngs=rngs)  # first order weights w
        self.bias = nnx.Param(jnp.zeros((), jnp.float32))
        layers = []
        width = self.num_fields * config.embed_dim
        for h in config.hidden:
            layers.append(nnx.Linear(width, h, rngs=rngs))
            width = h
        self.hidden = nnx.List(layers)
        self.out = nnx.Linear(width, 1, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout)

    def __call__(self, fields: jax.Array, *, dropout_key: jax.Array | None = None) -> jax.Array:
        """fields [B, F] int32 -> logits [B]; dropout only when `dropout_key` is given (training)."""
        ids = fields + self.offsets[...][None, :]  # [B, F] rows of the shared table
        emb = self.embed(ids)  # [B, F, D]
        first = jnp.sum(self.linear(ids)[..., 0], axis=1)  # [B]
        second = fm_second_order(emb)  # [B]
        h = emb.reshape(emb.shape[0], -1)  # [B, F*D]
        train = dropout_key is not None
        keys = jax.random.split(dropout_key, len(self.hidden)) if train else [None] * len(self.hidden)
        for layer, key in zip(self.hidden, keys):
            h = nnx.relu(layer(h))  # [B, H]
            h = self.dropout(h, deterministic=not train, rngs=key)
        deep = self.out(h)[:, 0]  # [B]
        return self.bias[...] + first + second + deep


# ----------------------------------------------------------------------------- input checks


def check_fields(fields, field_cardinalities: Sequence[int], name: str = "fields") -> np.ndarray:
    """[N, F] integer ids, each within its field's cardinality; the error names field and value."""
    x = np.asarray(fields)
    cards = np.asarray([int(c) for c in field_cardinalities])
    if x.ndim != 2 or x.shape[1] != cards.shape[0]:
        raise ValueError(f"{name} must be [N, {cards.shape[0]}] (one column per field), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{name} must hold integer ids, got dtype {x.dtype}")
    bad = (x < 0) | (x >= cards[None, :])
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{name}: unknown id {int(x[row, col])} in field {int(col)} (row {int(row)}); "
            f"field {int(col)} has cardinality {int(cards[col])}, ids must be in [0, {int(cards[col]) - 1}] "
            f"({int(bad.sum())} out-of-range ids in total)"
        )
    return x.astype(np.int32)


def _check_labels(labels, n: int, name: str) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"{name} must be [{n}] to match the fields, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"{name} must be 0/1")
    return y.astype(np.float32)


# ----------------------------------------------------------------------------- sharded train step


def _make_optimizer(config: DeepFMConfig) -> optax.GradientTransformation:
    if config.weight_decay > 0:
        return optax.adamw(config.learning_rate, weight_decay=config.weight_decay)
    return optax.adam(config.learning_rate)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, mesh: Mesh):
    """jit(step)(params, rest, opt_state, fields [B, F], labels [B], weights [B], key) -> (params, opt_state, loss).

    Parameters and optimizer state are replicated and donated; the batch is split over the mesh's
    data axes. The loss is the weighted mean BCE (zero weights mark padding rows).
    """
    replicated = NamedSharding(mesh, PartitionSpec())

    def step(params, rest, opt_state, fields, labels, weights, key):
        def loss_fn(p):
            model = nnx.merge(graphdef, p, rest)
            logits = model(fields, dropout_key=key)  # [B]
            bce = optax.sigmoid_binary_cross_entropy(logits, labels)  # [B]
            return jnp.sum(weights * bce) / jnp.maximum(jnp.sum(weights), 1.0)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(
        step,
        in_shardings=(replicated, replicated, replicated, parallel.batch_sharding(mesh, 2),
                      parallel.batch_sharding(mesh, 1), parallel.batch_sharding(mesh, 1), replicated),
        out_shardings=(replicated, replicated, replicated),
        donate_argnums=(0, 2),
    )


def _predict_logits_fn(graphdef: nnx.GraphDef):
    @jax.jit
    def f(params, rest, fields):
        return jax.nn.sigmoid(nnx.merge(graphdef, params, rest)(fields))

    return f


def predict(model: DeepFM, fields, batch_size: int = 8192) -> np.ndarray:
    """P(click) [N] for id rows [N, F] (no dropout)."""
    x = check_fields(fields, model.field_cardinalities)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    f = _predict_logits_fn(graphdef)
    out = [np.asarray(f(params, rest, jnp.asarray(x[i:i + batch_size]))) for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def _is_better(metric: str, new: float, best: float | None) -> bool:
    if best is None:
        return True
    return new > best if metric == "auc" else new < best


def train_deepfm(
    train_fields,
    train_labels,
    valid_fields,
    valid_labels,
    field_cardinalities: Sequence[int],
    config: DeepFMConfig | Mapping[str, Any] | None = None,
    mesh: Mesh | None = None,
) -> tuple[DeepFM, dict[str, Any]]:
    """Trains DeepFM with early stopping on the validation split; returns (best model, history).

    history = {"epochs": [{"epoch", "train_loss", "valid_auc", "valid_logloss", "valid_acc", "seconds"}],
               "best_epoch": int, "best": {metric: value}, "stopped_early": bool}
    """
    config = DeepFMConfig.from_any(config)
    if config.early_stop_metric not in ("auc", "logloss"):
        raise ValueError(f"early_stop_metric must be 'auc' or 'logloss', got {config.early_stop_metric!r}")
    if config.max_epochs < 1 or config.patience < 1 or config.batch_size < 1:
        raise ValueError(f"max_epochs, patience and batch_size must be >= 1, got {config.max_epochs}, "
                         f"{config.patience}, {config.batch_size}")
    x_tr = check_fields(train_fields, field_cardinalities, "train_fields")
    y_tr = _check_labels(train_labels, len(x_tr), "train_labels")
    x_va = check_fields(valid_fields, field_cardinalities, "valid_fields")
    y_va = _check_labels(valid_labels, len(x_va), "valid_labels")
    if len(x_tr) == 0 or len(x_va) == 0:
        raise ValueError(f"empty split: {len(x_tr)} train rows, {len(x_va)} valid rows")
    # This process's devices: a multi-host run trains the small ID model once per process (the same seed and
    # rows, so the same model everywhere), with no collectives and numpy batches as they are.
    mesh = parallel.make_mesh(devices=jax.local_devices()) if mesh is None else mesh
    dp = parallel.data_parallel_size(mesh)
    if config.batch_size % dp:
        raise ValueError(f"batch_size {config.batch_size} must divide by the data-parallel size {dp}")

    model = DeepFM(field_cardinalities, config, rngs=nnx.Rngs(config.seed))
    tx = _make_optimizer(config)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    replicated = NamedSharding(mesh, PartitionSpec())
    params = jax.device_put(params, replicated)
    rest = jax.device_put(rest, replicated)
    opt_state = jax.device_put(tx.init(params), replicated)
    step = make_train_step(graphdef, tx, mesh)
    rows2, rows1 = parallel.batch_sharding(mesh, 2), parallel.batch_sharding(mesh, 1)
    predict_fn = _predict_logits_fn(graphdef)

    rng = np.random.default_rng(config.seed)
    base_key = jax.random.key(config.seed + 1)
    bs = config.batch_size
    history: dict[str, Any] = {"epochs": [], "best_epoch": -1, "best": None, "stopped_early": False}
    best_value, best_params, since_best, step_no = None, None, 0, 0
    for epoch in range(config.max_epochs):
        t0 = time.perf_counter()
        order = rng.permutation(len(x_tr))
        losses, weights_seen = 0.0, 0.0
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            w = np.zeros(bs, np.float32)
            w[: len(idx)] = 1.0
            idx = np.concatenate([idx, np.zeros(bs - len(idx), idx.dtype)])  # pad with row 0, weight 0
            batch = jax.device_put((x_tr[idx], y_tr[idx], w), (rows2, rows1, rows1))  # [B, F], [B], [B]
            params, opt_state, loss = step(params, rest, opt_state, *batch, jax.random.fold_in(base_key, step_no))
            step_no += 1
            losses += float(loss) * w.sum()
            weights_seen += w.sum()
        probs = np.concatenate([np.asarray(predict_fn(params, rest, jnp.asarray(x_va[i:i + config.eval_batch_size])))
                                for i in range(0, len(x_va), config.eval_batch_size)])
        valid = metrics.ctr_metrics(y_va, probs)
        row = {"epoch": epoch, "train_loss": float(losses / weights_seen), "valid_auc": valid["auc"],
               "valid_logloss": valid["logloss"], "valid_acc": valid["acc"], "seconds": time.perf_counter() - t0}
        history["epochs"].append(row)
        logging.info("deepfm epoch %d: %s", epoch, row)
        value = valid[config.early_stop_metric]
        if _is_better(config.early_stop_metric, value, best_value):
            best_value, since_best = value, 0
            best_params = jax.tree.map(np.asarray, params)  # host copy: params are donated next step
            history["best_epoch"], history["best"] = epoch, dict(valid)
        else:
            since_best += 1
            if since_best >= config.patience:
                history["stopped_early"] = True
                break
    nnx.update(model, jax.tree.map(jnp.asarray, best_params))
    return model, history
