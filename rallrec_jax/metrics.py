"""CTR metrics: ROC-AUC, LogLoss and accuracy, in JAX, equal to scikit-learn's.

The official code scores every model with `sklearn.metrics.roc_auc_score`, `log_loss` and
`accuracy_score(labels, p > 0.5)` (spec 3.3). This module reproduces those three numbers with
jit-compatible JAX kernels, so they can run inside a jitted evaluation loop on device, plus host
wrappers that validate their input and raise the same kinds of errors sklearn raises.

Two layers:
  * `binary_auc`, `binary_log_loss`, `binary_accuracy`: pure `jnp`, jit-compatible, no Python
    control flow on values. They cannot raise on bad data, so an AUC over a single-class label set
    comes back as NaN.
  * `roc_auc`, `log_loss`, `accuracy`, `ctr_metrics`: host entry points. They check lengths, NaN/inf,
    label values and probability range, raise `ValueError` naming the offending input, then call
    the kernels and return Python floats.

Precision. sklearn 1.9 keeps the probabilities' dtype: it clips them to `[eps, 1 - eps]` with `eps`
the machine epsilon *of that dtype* and computes the loss in it. The kernels do the same, so
`binary_log_loss` on float32 equals sklearn on float32 input (to float32 rounding) and on float64
input equals sklearn on float64 input. JAX runs with x64 disabled by default, which would silently
turn a float64 input into float32 (and change eps from 2.2e-16 to 1.2e-7, i.e. the loss of a
p = 0 prediction from 36.04 to 15.94). The host wrappers therefore compute in float64 by default
inside a `jax.enable_x64(True)` context (thread-local, restored on exit); pass
`precision="float32"` to stay in float32 (then results match sklearn given float32 input,
~1e-6 for LogLoss and AUC).
"""
from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Precision = Literal["float32", "float64"]


# ----------------------------------------------------------------------------- jit-compatible kernels


def binary_auc(labels: jax.Array, scores: jax.Array) -> jax.Array:
    """ROC-AUC as the Mann-Whitney U statistic with midranks (ties count one half).

    For every positive, count the negatives scoring strictly below it plus half the negatives tied
    with it; AUC is the mean of those counts over positives, divided by the number of negatives.
    This equals sklearn's trapezoidal `roc_auc_score` exactly, ties included. Each positive's share
    is a number in [0, 1] before summation, so float32 does not lose the large rank sums that a
    plain rank-sum formula would. Returns NaN when one class is absent (a jitted function cannot
    raise; `roc_auc` raises instead).

    labels: [N] in {0, 1} (any numeric/bool dtype); scores: [N] float, finite.
    """
    scores = jnp.asarray(scores)
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        scores = scores.astype(jnp.float32)
    positive = jnp.asarray(labels).astype(bool)  # [N]
    # Negatives sorted; positives pushed to +inf so they are never counted below a finite score.
    neg_sorted = jnp.sort(jnp.where(positive, jnp.inf, scores))  # [N]
    below = jnp.searchsorted(neg_sorted, scores, side="left")  # [N] negatives < s
    at_or_below = jnp.searchsorted(neg_sorted, scores, side="right")  # [N] negatives <= s
    n_pos = jnp.sum(positive)
    n_neg = positive.shape[0] - n_pos
    share = (below + 0.5 * (at_or_below - below)).astype(scores.dtype) / n_neg.astype(scores.dtype)  # [N]
    return jnp.sum(jnp.where(positive, share, 0)) / n_pos.astype(scores.dtype)


def binary_log_loss(labels: jax.Array, probs: jax.Array) -> jax.Array:
    """Mean binary cross-entropy, clipped as sklearn 1.9 does.

    sklearn builds the two-column matrix [1 - p, p], clips *both columns* to [eps, 1 - eps] with eps
    the machine epsilon of p's dtype, and sums y * log. Clipping 1 - p (rather than taking 1 - clip(p))
    matters at p near 1, so it is done the same way here.

    labels: [N] in {0, 1}; probs: [N] float in [0, 1].
    """
    probs = jnp.asarray(probs)
    if not jnp.issubdtype(probs.dtype, jnp.floating):
        probs = probs.astype(jnp.float32)
    eps = jnp.finfo(probs.dtype).eps
    y = jnp.asarray(labels).astype(probs.dtype)  # [N]
    p1 = jnp.clip(probs, eps, 1 - eps)  # [N] P(label = 1)
    p0 = jnp.clip(1 - probs, eps, 1 - eps)  # [N] P(label = 0)
    return -jnp.mean(y * jnp.log(p1) + (1 - y) * jnp.log(p0))


def binary_accuracy(labels: jax.Array, probs: jax.Array, threshold: float = 0.5) -> jax.Array:
    """Fraction of samples whose prediction `p > threshold` (strict, as the official code) equals the label."""
    probs = jnp.asarray(probs)
    dtype = probs.dtype if jnp.issubdtype(probs.dtype, jnp.floating) else jnp.float32
    pred = probs > threshold  # [N] bool
    # mean in the probabilities' dtype: jnp.mean of a bool array is float32 even with x64 enabled
    return jnp.mean((pred == jnp.asarray(labels).astype(bool)).astype(dtype))


_auc_jit = jax.jit(binary_auc)
_log_loss_jit = jax.jit(binary_log_loss)
_accuracy_jit = jax.jit(binary_accuracy, static_argnames="threshold")


@jax.jit
def _all_metrics(labels: jax.Array, probs: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    return binary_auc(labels, probs), binary_log_loss(labels, probs), binary_accuracy(labels, probs)


# ----------------------------------------------------------------------------- host wrappers


def _validate(labels, probs, *, need_both_classes: bool, need_unit_range: bool,
              name: str = "probs") -> tuple[np.ndarray, np.ndarray]:
    """Checks the input on the host and returns numpy copies: labels int32 [N], probs float64 [N]."""
    y = np.asarray(labels)
    p = np.asarray(probs)
    if y.ndim != 1 or p.ndim != 1:
        raise ValueError(f"labels and {name} must be 1-D, got shapes {y.shape} and {p.shape}")
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"labels and {name} differ in length: {y.shape[0]} labels vs {p.shape[0]} {name}")
    if y.shape[0] == 0:
        raise ValueError(f"labels and {name} are empty")
    if not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)
            or p.dtype == np.bool_):
        raise ValueError(f"{name} must be numeric, got dtype {p.dtype}")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise ValueError(f"labels must be numeric 0/1, got dtype {y.dtype}")
    p = p.astype(np.float64)
    bad = ~np.isfinite(p)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} contains {int(bad.sum())} NaN/inf values (first at index {i}: {p[i]})")
    y_num = y.astype(np.float64)
    if not np.isin(y_num, (0.0, 1.0)).all():
        odd = np.unique(y_num[~np.isin(y_num, (0.0, 1.0))])[:5]
        raise ValueError(f"labels must be 0/1, found values {odd.tolist()}")
    if need_unit_range and (p.min() < 0 or p.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1], found range [{p.min()}, {p.max()}]")
    if need_both_classes:
        n_pos = int(y_num.sum())
        if n_pos == 0 or n_pos == y_num.shape[0]:
            raise ValueError(
                f"Only one class present in labels ({'all 1' if n_pos else 'all 0'}, N={y_num.shape[0]}): "
                "ROC AUC score is not defined in that case."
            )
    return y_num.astype(np.int32), p


def _run(fn, y: np.ndarray, p: np.ndarray, precision: Precision):
    if precision == "float64":
        with jax.enable_x64(True):
            return fn(jnp.asarray(y), jnp.asarray(p, dtype=jnp.float64))
    if precision == "float32":
        return fn(jnp.asarray(y), jnp.asarray(p, dtype=jnp.float32))
    raise ValueError(f"precision must be 'float32' or 'float64', got {precision!r}")


def roc_auc(labels, scores, *, precision: Precision = "float64") -> float:
    """sklearn `roc_auc_score` for binary labels; ValueError for a single-class label set."""
    y, p = _validate(labels, scores, need_both_classes=True, need_unit_range=False, name="scores")
    return float(_run(_auc_jit, y, p, precision))


def log_loss(labels, probs, *, precision: Precision = "float64") -> float:
    """sklearn `log_loss` for binary labels and P(label = 1); eps = machine epsilon of `precision`.

    Unlike sklearn, a label set with one class is accepted (the classes are known to be {0, 1}).
    """
    y, p = _validate(labels, probs, need_both_classes=False, need_unit_range=True)
    return float(_run(_log_loss_jit, y, p, precision))


def accuracy(labels, probs, *, threshold: float = 0.5, precision: Precision = "float64") -> float:
    """Accuracy of `p > threshold` (strict), as `accuracy_score(labels, probs > 0.5)`."""
    y, p = _validate(labels, probs, need_both_classes=False, need_unit_range=False)
    return float(_run(lambda a, b: _accuracy_jit(a, b, threshold=float(threshold)), y, p, precision))


def ctr_metrics(labels, probs, *, precision: Precision = "float64") -> dict[str, float]:
    """{"auc", "logloss", "acc"} of P(click) against 0/1 labels, as the paper's tables report them."""
    y, p = _validate(labels, probs, need_both_classes=True, need_unit_range=True)
    auc, ll, acc = _run(_all_metrics, y, p, precision)
    return {"auc": float(auc), "logloss": float(ll), "acc": float(acc)}
