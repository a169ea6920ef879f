"""Honest baselines beside the LLM rows: what a score needs no language model for.

Every table row is scored on the same evaluation sample; these rows say how much of a row's AUC the ratings
alone explain. All are fitted on TRAINING rows only (`fit_baselines`), and each maps its feature(s) to P(like)
with a logistic regression fitted on the training rows, so that LogLoss and ACC mean something too:

- History mean rating: the mean of the ratings of the K most recent history items, exactly the ratings the
  `simple` prompt shows (K = evaluate.k_history; histories.recent_history). The history holds only interactions
  before the target, so there is no label leak.
- Item mean rating: the item's mean rating over the training interactions, smoothed towards the global mean,
  (sum + prior * mean) / (count + prior). On the training rows the row's own rating is left out
  (leave-one-out), or the fit would learn a feature that contains the label.
- History + item means: the two features in one logistic regression.
- Item popularity: log(1 + the item's number of training interactions) (leave-one-out on training rows).

The training interactions are those a training sample sees (`CTRData.training_interactions`: targets and
histories of the train split), the same ones LightGCN learns from; nothing of validation or test time.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from rallrec_jax.data import features
from rallrec_jax.data.ctr import CTRData

NAMES = ("History mean rating", "Item mean rating", "History + item means (LR)", "Item popularity")
_FEATURES = {"History mean rating": ("history",), "Item mean rating": ("item",),
             "History + item means (LR)": ("history", "item"), "Item popularity": ("popularity",)}


@dataclasses.dataclass(frozen=True)
class Logistic:
    """P = sigmoid(b + w . (x - mean) / scale): a logistic regression on standardised features."""

    mean: np.ndarray  # [F]
    scale: np.ndarray  # [F]
    coef: np.ndarray  # [F]
    intercept: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = self.intercept + ((np.asarray(x, np.float64) - self.mean) / self.scale) @ self.coef  # [N]
        return 1.0 / (1.0 + np.exp(-z))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-6, iterations: int = 100) -> Logistic:
    """Maximum likelihood (a small ridge `l2` * N on the weights, none on the intercept) by Newton's method.
    x [N, F], y [N] in {0, 1}."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise ValueError(f"logistic regression needs x [N, F] and y [N], got {x.shape} and {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError("logistic regression features hold NaN/inf")
    mean, scale = x.mean(0), x.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    z = np.concatenate([np.ones((x.shape[0], 1)), (x - mean) / scale], axis=1)  # [N, F + 1]
    beta = np.zeros(z.shape[1])
    ridge = np.full(z.shape[1], l2 * x.shape[0])
    ridge[0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ beta)))
        grad = z.T @ (p - y) + ridge * beta
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(ridge)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return Logistic(mean, scale, beta[1:], float(beta[0]))


def history_mean_rating(data: CTRData, split: str, rows: Sequence[int] | np.ndarray, k: int,
                        fallback: float) -> np.ndarray:
    """[n] mean rating of each row's K most recent history items (what the `simple` prompt shows);
    `fallback` for a row without history (data/features.py computes it, DeepFM's optional field reads it too)."""
    return features.recent_mean_rating(data, split, rows, k, fallback)


@dataclasses.dataclass(frozen=True)
class BaselineFit:
    """Everything the baselines learned, all from training rows: item statistics and one logistic per row."""

    k_history: int
    item_prior: float
    global_mean: float
    item_sum: np.ndarray  # [I] sum of training ratings per item
    item_count: np.ndarray  # [I] training interactions per item
    models: dict[str, Logistic]

    def parameters(self) -> dict[str, np.ndarray]:
        """Every fitted number, flat (for the test that they see training rows only)."""
        out = {"global_mean": np.asarray(self.global_mean), "item_sum": self.item_sum, "item_count": self.item_count}
        for name, m in self.models.items():
            out.update({f"{name}/mean": m.mean, f"{name}/scale": m.scale, f"{name}/coef": m.coef,
                        f"{name}/intercept": np.asarray(m.intercept)})
        return out


def _features(fit_stats: tuple, data: CTRData, split: str, rows: np.ndarray, leave_one_out: bool) -> dict:
    k, prior, mu, item_sum, item_count = fit_stats
    s = data.samples[split]
    items = s["item"][rows]
    total, count = item_sum[items].astype(np.float64), item_count[items].astype(np.float64)
    if leave_one_out:  # the row's own rating is one of the training interactions: take it out
        total, count = total - s["rating"][rows], count - 1
    return {"history": history_mean_rating(data, split, rows, k, mu),
            "item": (total + prior * mu) / (count + prior),
            "popularity": np.log1p(np.maximum(count, 0))}


def fit_baselines(data: CTRData, k_history: int, item_prior: float = 10.0, l2: float = 1e-6) -> BaselineFit:
    """Fits the item statistics and every baseline's logistic regression on the train split only."""
    if not item_prior > 0:
        raise ValueError(f"baselines.item_prior={item_prior} must be > 0 (configs/base_pipeline.py): an item without "
                         "training ratings then scores the global mean")
    _, t_items, t_ratings = data.training_interactions()
    item_sum = np.bincount(t_items, weights=t_ratings, minlength=data.num_items)
    item_count = np.bincount(t_items, minlength=data.num_items).astype(np.float64)
    mu = float(t_ratings.mean())
    stats = (int(k_history), float(item_prior), mu, item_sum, item_count)
    rows = np.arange(data.num_samples("train"))
    feats = _features(stats, data, "train", rows, leave_one_out=True)
    y = data.samples["train"]["label"]
    models = {name: fit_logistic(np.stack([feats[f] for f in _FEATURES[name]], axis=1), y, l2) for name in NAMES}
    return BaselineFit(int(k_history), float(item_prior), mu, item_sum, item_count, models)


def predict_baselines(fit: BaselineFit, data: CTRData, split: str, rows: Sequence[int] | np.ndarray
                      ) -> dict[str, np.ndarray]:
    """{baseline name: P(like) [n]} for the rows of a split (no leave-one-out: these are not training rows)."""
    rows = np.asarray(rows, np.int64)
    stats = (fit.k_history, fit.item_prior, fit.global_mean, fit.item_sum, fit.item_count)
    feats = _features(stats, data, split, rows, leave_one_out=False)
    return {name: m.predict(np.stack([feats[f] for f in _FEATURES[name]], axis=1)) for name, m in fit.models.items()}


def settings(config: Mapping | None) -> dict:
    """baselines.{item_prior, l2, deepfm_recent} with defaults (older configs have no `baselines` section)."""
    config = config or {}
    return {"item_prior": float(config.get("item_prior", 10.0)), "l2": float(config.get("l2", 1e-6)),
            "deepfm_recent": bool(config.get("deepfm_recent", True))}
