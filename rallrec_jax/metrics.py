"""CTR metrics: ROC-AUC, LogLoss and accuracy, in JAX, equal to scikit-learn's; GAUC and user-level bootstrap intervals;
ranking metrics (Recall@K, NDCG@K) at the end.

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

import functools
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


# ----------------------------------------------------------------------------- per-user metrics and intervals
#
# A recommender's test rows come in users: rows of one user share the user's taste and rating habits, so
# they are not independent draws, and an interval that resamples rows is too narrow when a few users hold
# many rows. The intervals below resample USERS with replacement (each resample draws as many users as the
# sample holds, every drawn user bringing all their rows), which is the level at which the rows were drawn
# (data/sampling.py). They are percentile intervals of 1,000 resamples by default, in vectorised numpy:
# a resample is a vector of user counts, turned into row weights, and every metric is a weighted one.


def _as_users(users, n: int) -> tuple[np.ndarray, int]:
    """users [N] (any ids) -> (index [N] into 0..U-1 in sorted-id order, U)."""
    u = np.asarray(users)
    if u.shape != (n,):
        raise ValueError(f"users must be [{n}] (one user per row), got shape {u.shape}")
    uniq, index = np.unique(u, return_inverse=True)
    return index.reshape(-1), int(uniq.shape[0])


def gauc(labels, scores, users) -> dict:
    """Group AUC: each user's ROC-AUC (midranks for ties), averaged over the users who have both labels,
    weighted by their number of rows (as recommender libraries report it). Returns {"gauc", "users" (that
    count), "rows" (their rows)}; gauc is NaN when no user has both labels."""
    y, s = _validate(labels, scores, need_both_classes=False, need_unit_range=False, name="scores")
    per_user, weight, _ = _per_user_auc(y, s, _as_users(users, y.shape[0])[0])
    valid = ~np.isnan(per_user)
    if not valid.any():
        return {"gauc": float("nan"), "users": 0, "rows": 0}
    return {"gauc": float(np.sum(per_user[valid] * weight[valid]) / np.sum(weight[valid])),
            "users": int(valid.sum()), "rows": int(weight[valid].sum())}


def _per_user_auc(y: np.ndarray, s: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-user AUC [U] (NaN without both labels), rows per user [U], U. Mann-Whitney with midranks inside
    each user: AUC_u = (sum of positives' ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg)."""
    num_users = int(index.max()) + 1 if index.size else 0
    order = np.lexsort((s, index))  # by user, then score
    su, ss = index[order], s[order]
    n = su.shape[0]
    user_start = np.flatnonzero(np.r_[True, su[1:] != su[:-1]])  # [U']
    within = np.arange(n) - np.repeat(user_start, np.diff(np.r_[user_start, n]))  # [N] 0-based rank in user
    tie_start = np.flatnonzero(np.r_[True, (su[1:] != su[:-1]) | (ss[1:] != ss[:-1])])  # [G] tie groups
    tie_len = np.diff(np.r_[tie_start, n])
    mid = np.repeat(within[tie_start] + (tie_len - 1) / 2.0 + 1.0, tie_len)  # [N] 1-based midrank in user
    pos = y[order].astype(np.float64)
    n_pos = np.bincount(su, weights=pos, minlength=num_users)
    rows = np.bincount(su, minlength=num_users).astype(np.float64)
    n_neg = rows - n_pos
    rank_sum = np.bincount(su, weights=pos * mid, minlength=num_users)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc, rows, num_users


def user_resample_counts(num_users: int, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """[R, U] how often each user is drawn in each resample (U draws with replacement): a function of
    (U, R, seed) alone, so every table row over the same sample sees the same resamples."""
    if resamples < 1 or num_users < 1:
        raise ValueError(f"resamples={resamples} and users={num_users} must be >= 1")
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_users, np.full(num_users, 1.0 / num_users), size=resamples)


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of every weight vector: weights [R, N] -> [R] (sklearn's `sample_weight` AUC, ties counting
    one half; NaN where a class has zero weight). The scores are sorted once; each row of weights is
    summed per distinct score level, and AUC = sum_l P_l (N_below_l + N_l / 2) / (P N)."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, np.float64)
    w = np.atleast_2d(np.asarray(weights, np.float64))
    order = np.argsort(s, kind="stable")
    ss = s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])  # [L] distinct levels, ascending
    ws, ys = w[:, order], y[order]
    pos = np.add.reduceat(np.where(ys, ws, 0.0), starts, axis=1)  # [R, L]
    neg = np.add.reduceat(np.where(ys, 0.0, ws), starts, axis=1)  # [R, L]
    below = np.cumsum(neg, axis=1) - neg  # [R, L] negative weight strictly below each level
    total_p, total_n = pos.sum(1), neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sum(pos * (below + 0.5 * neg), axis=1) / (total_p * total_n)
    out[(total_p == 0) | (total_n == 0)] = np.nan
    return out


def _row_losses(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row log loss (clipped as `binary_log_loss` in float64) and correctness of p > 0.5: [N], [N]."""
    eps = np.finfo(np.float64).eps
    ll = -(y * np.log(np.clip(p, eps, 1 - eps)) + (1 - y) * np.log(np.clip(1 - p, eps, 1 - eps)))
    return ll, ((p > 0.5) == y.astype(bool)).astype(np.float64)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def _chunks(counts: np.ndarray, index: np.ndarray, chunk: int = 128):
    """Row weights [r, N] of consecutive blocks of resamples (bounded memory for large samples)."""
    for a in range(0, counts.shape[0], chunk):
        yield counts[a:a + chunk][:, index].astype(np.float64)


def bootstrap_metrics(labels, probs, users, *, resamples: int = 1000, seed: int = 0,
                      level: float = 0.95) -> dict:
    """AUC, GAUC, LogLoss and ACC of one table row with user-level bootstrap intervals.

    Returns {"auc": {"value", "lo", "hi"}, "gauc": {... , "users"}, "logloss": {...}, "acc": {...},
    "rows", "users", "resamples", "seed", "level"}. Point values are the sample's own (`ctr_metrics`,
    `gauc`); lo/hi the percentile interval of the resamples' values."""
    y, p = _validate(labels, probs, need_both_classes=True, need_unit_range=True)
    index, num_users = _as_users(users, y.shape[0])
    counts = user_resample_counts(num_users, resamples, seed)  # [R, U]
    ll, correct = _row_losses(y, p)
    per_user, rows_per_user, _ = _per_user_auc(y, p, index)
    valid = ~np.isnan(per_user)
    dist = {"auc": [], "logloss": [], "acc": []}
    for w in _chunks(counts, index):
        total = w.sum(1)
        dist["auc"].append(weighted_auc(y, p, w))
        dist["logloss"].append(w @ ll / total)
        dist["acc"].append(w @ correct / total)
    dist = {k: np.concatenate(v) for k, v in dist.items()}
    uw = counts[:, valid] * rows_per_user[valid]  # [R, U_valid] user weight in each resample
    with np.errstate(invalid="ignore", divide="ignore"):
        dist["gauc"] = (uw @ per_user[valid]) / uw.sum(1) if valid.any() else np.full(resamples, np.nan)
    # Point values in float64 numpy (the same numbers as ctr_metrics, held to sklearn in the tests), so that
    # samples of many sizes never pay a jit compilation each.
    g = gauc(y, p, index)
    point = {"auc": float(weighted_auc(y, p, np.ones_like(p))[0]), "logloss": float(ll.mean()),
             "acc": float(correct.mean()), "gauc": g["gauc"]}
    out = {k: {"value": float(point[k]), **dict(zip(("lo", "hi"), _interval(dist[k], level)))}
           for k in ("auc", "gauc", "logloss", "acc")}
    out["gauc"]["users"] = g["users"]
    return {**out, "rows": int(y.shape[0]), "users": num_users, "resamples": int(resamples), "seed": int(seed),
            "level": float(level)}


def paired_auc_difference(labels, probs_a, probs_b, users, *, resamples: int = 1000, seed: int = 0,
                          level: float = 0.95) -> dict:
    """AUC(a) - AUC(b) on the same rows, with a paired user-level bootstrap: both rows are scored on every
    resample's users, so what the two share (which users happen to be drawn) cancels in the difference.
    Returns {"delta", "lo", "hi", "share_above_zero" (of the resamples), "rows", "users", ...}."""
    y, a = _validate(labels, probs_a, need_both_classes=True, need_unit_range=False, name="probs_a")
    _, b = _validate(labels, probs_b, need_both_classes=True, need_unit_range=False, name="probs_b")
    index, num_users = _as_users(users, y.shape[0])
    counts = user_resample_counts(num_users, resamples, seed)
    diffs = np.concatenate([weighted_auc(y, a, w) - weighted_auc(y, b, w) for w in _chunks(counts, index)])
    lo, hi = _interval(diffs, level)
    finite = diffs[np.isfinite(diffs)]
    ones = np.ones_like(a)
    delta = float(weighted_auc(y, a, ones)[0] - weighted_auc(y, b, ones)[0])
    return {"delta": delta, "lo": lo, "hi": hi,
            "share_above_zero": float(np.mean(finite > 0)) if finite.size else float("nan"),
            "rows": int(y.shape[0]), "users": num_users, "resamples": int(resamples), "seed": int(seed),
            "level": float(level)}


# ----------------------------------------------------------------------------- ranking metrics
#
# Full-ranking Recall@K / NDCG@K of a recommender's scores `user_emb @ item_emb.T`, each user's training items
# excluded from the ranking (LightGCN's evaluation, and its popularity baseline).


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
