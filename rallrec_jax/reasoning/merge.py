"""Consistency-based merging (CM), eq. 10 of RALLRec+ (spec 3.5), in pure JAX.

Each model's prediction is weighted by the inverse of its spread over repeated runs, so a reasoning
model whose K traces disagree counts little and a consistent one counts more:

    P_final = (alpha * mean_R / (var_R + eps) + mean_G / (var_G + eps))
              / (alpha / (var_R + eps) + 1 / (var_G + eps))

This is the official `fused_prediction` with w_A = alpha, w_B = 1, tau_A = tau_B = 1. Defaults are
the paper's alpha = 0.1, eps = 1e-3. The variances are *population* variances (`np.var`,
ddof = 0) over the K traces, and the general model's mean is, in the official code, its *first*
run only (`general_mean="first"`), with "mean" as the alternative.

Everything is vectorised over samples ([N] arrays) and jit-compatible. Input checks (shapes, NaN,
range) run on the host when the arrays are concrete; under `jax.jit` they are skipped, since a
traced value cannot be inspected.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from rallrec_jax import metrics

GeneralMean = Literal["first", "mean"]
DEFAULT_ALPHA = 0.1
DEFAULT_EPSILON = 1e-3
PAPER_ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5)  # Fig. 6, eps = 1e-3
PAPER_EPSILONS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)  # Fig. 7, alpha = 0.1


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_runs(preds, name: str) -> None:
    """Host check of an [N, K] array of per-run probabilities (skipped for tracers)."""
    if not _is_concrete(preds):
        return
    a = np.asarray(preds)
    if a.ndim != 2:
        raise ValueError(f"{name} must be [N, K] (samples x runs), got shape {a.shape}")
    if a.shape[1] == 0:
        raise ValueError(f"{name} has zero runs (shape {a.shape})")
    bad = ~np.isfinite(a)
    if bad.any():
        i, k = np.argwhere(bad)[0]
        raise ValueError(f"{name} has {int(bad.sum())} NaN/inf values (first at sample {i}, run {k})")
    if a.min() < 0 or a.max() > 1:
        raise ValueError(f"{name} must hold probabilities in [0, 1], found range [{a.min()}, {a.max()}]")


def trace_stats(preds: jax.Array, name: str = "reasoning_preds") -> tuple[jax.Array, jax.Array]:
    """Per-sample mean and population variance over K runs: [N, K] -> ([N], [N]).

    Population variance (ddof = 0) as `np.var` in the official merge script; one run gives 0.
    NaN is an error rather than something to skip: a missing trace score would silently change
    the variance that sets the model's weight.
    """
    _check_runs(preds, name)
    preds = jnp.asarray(preds, dtype=jnp.result_type(float))
    mean = jnp.mean(preds, axis=1)  # [N]
    var = jnp.mean(jnp.square(preds - mean[:, None]), axis=1)  # [N], ddof = 0
    return mean, var


def general_stats(preds: jax.Array, general_mean: GeneralMean = "first") -> tuple[jax.Array, jax.Array]:
    """The general model's (mean, variance) from [N, R] runs, or [N] for a single deterministic run.

    `general_mean="first"` takes run 0 as the mean (the official code: `mu_b = model_b_preds[0]`),
    `"mean"` the average over runs; the variance is always over all runs (0 for R = 1).
    """
    if jnp.ndim(preds) == 1:
        preds = jnp.asarray(preds)[:, None]  # [N] -> [N, 1]
    mean, var = trace_stats(preds, name="general_preds")
    if general_mean == "first":
        mean = jnp.asarray(preds, dtype=mean.dtype)[:, 0]  # [N]
    elif general_mean != "mean":
        raise ValueError(f"general_mean must be 'first' or 'mean', got {general_mean!r}")
    return mean, var


def merge(
    mean_r: jax.Array,
    var_r: jax.Array,
    mean_g: jax.Array,
    var_g: jax.Array,
    alpha: float | jax.Array = DEFAULT_ALPHA,
    epsilon: float | jax.Array = DEFAULT_EPSILON,
) -> jax.Array:
    """Eq. 10 for every sample: all inputs [N] (or broadcastable), returns P_final [N].

    The result is a convex combination of mean_r and mean_g (both weights are positive), so it is
    clipped to the interval between them; that only removes float rounding and keeps P_final in
    [0, 1]. alpha = 0 returns mean_g; a very large alpha returns mean_r.
    """
    if _is_concrete(alpha) and np.any(np.asarray(alpha) < 0):
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if _is_concrete(epsilon) and np.any(np.asarray(epsilon) <= 0):
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    for name, v in (("var_r", var_r), ("var_g", var_g)):
        if _is_concrete(v) and np.any(np.asarray(v) < 0):
            raise ValueError(f"{name} must be >= 0 (a variance), found min {np.min(np.asarray(v))}")
    mean_r, var_r, mean_g, var_g = (jnp.asarray(x, dtype=jnp.result_type(float)) for x in (mean_r, var_r, mean_g, var_g))
    w_r = alpha / (var_r + epsilon)  # [N]
    w_g = 1.0 / (var_g + epsilon)  # [N]
    fused = (w_r * mean_r + w_g * mean_g) / (w_r + w_g)  # [N]
    return jnp.clip(fused, jnp.minimum(mean_r, mean_g), jnp.maximum(mean_r, mean_g))


def merge_runs(
    reasoning_preds: jax.Array,
    general_preds: jax.Array,
    alpha: float = DEFAULT_ALPHA,
    epsilon: float = DEFAULT_EPSILON,
    general_mean: GeneralMean = "first",
) -> jax.Array:
    """P_final from raw runs: reasoning [N, K] traces and general [N, R] runs (or [N])."""
    mean_r, var_r = trace_stats(reasoning_preds)
    mean_g, var_g = general_stats(general_preds, general_mean)
    if mean_r.shape != mean_g.shape:
        raise ValueError(f"reasoning_preds cover {mean_r.shape[0]} samples, general_preds {mean_g.shape[0]}")
    return merge(mean_r, var_r, mean_g, var_g, alpha, epsilon)


@jax.jit
def _merge_grid(mean_r, var_r, mean_g, var_g, alphas, epsilons):
    """[S] settings x [N] samples -> [S, N]."""
    return jax.vmap(lambda a, e: merge(mean_r, var_r, mean_g, var_g, a, e))(alphas, epsilons)


def sweep(
    labels,
    mean_r: jax.Array,
    var_r: jax.Array,
    mean_g: jax.Array,
    var_g: jax.Array,
    settings: Sequence[tuple[float, float]],
) -> list[dict[str, float]]:
    """Metrics of P_final for each (alpha, epsilon): rows {"alpha", "epsilon", "auc", "logloss", "acc"}."""
    if not settings:
        raise ValueError("sweep needs at least one (alpha, epsilon) setting")
    alphas = jnp.asarray([float(a) for a, _ in settings])
    epsilons = jnp.asarray([float(e) for _, e in settings])
    if np.any(np.asarray(alphas) < 0) or np.any(np.asarray(epsilons) <= 0):
        raise ValueError(f"alphas must be >= 0 and epsilons > 0, got {list(settings)}")
    fused = np.asarray(_merge_grid(*(jnp.asarray(x, jnp.float32) for x in (mean_r, var_r, mean_g, var_g)),
                                   alphas, epsilons))  # [S, N]
    rows = []
    for (a, e), p in zip(settings, fused):
        rows.append({"alpha": float(a), "epsilon": float(e), **metrics.ctr_metrics(labels, p)})
    return rows


def sweep_alpha(labels, mean_r, var_r, mean_g, var_g, alphas: Sequence[float] = PAPER_ALPHAS,
                epsilon: float = DEFAULT_EPSILON) -> list[dict[str, float]]:
    """Fig. 6: alpha in {0.1, ..., 0.5} at eps = 1e-3."""
    return sweep(labels, mean_r, var_r, mean_g, var_g, [(a, epsilon) for a in alphas])


def sweep_epsilon(labels, mean_r, var_r, mean_g, var_g, epsilons: Sequence[float] = PAPER_EPSILONS,
                  alpha: float = DEFAULT_ALPHA) -> list[dict[str, float]]:
    """Fig. 7: eps in {1e-2, ..., 1e-6} at alpha = 0.1."""
    return sweep(labels, mean_r, var_r, mean_g, var_g, [(alpha, e) for e in epsilons])
