"""The paper's analyses (RALLRec+ Figs. 2, 3, 6, 7, 9; spec 4.6) as numbers, and their figures.

Each analysis function returns a JSON-ready dict (plain floats, ints, lists, with a "figure" key
naming the analysis); `save_figure(numbers, path_png)` draws it with matplotlib's Agg canvas (no
pyplot global state, safe in threads and headless) and writes the PNG plus the same numbers as
JSON beside it (`x.png` -> `x.json`), each atomically (temporary file, then `os.replace`).

  * Fig. 2 `accuracy_by_length`: every response (sample x run) sorted by its length and cut into
    5 equal groups; accuracy of `p > 0.5` per group ("overthinking": short responses do better).
  * Fig. 3 `accuracy_vs_variance`: samples sorted by the variance of their K runs; accuracy of the
    runs' mean (`mean > 0.5`, as the official `plot_consistency`) over a sliding window of 500
    (BookCrossing) or 1,000 samples. The official code's window sums `cum[w:] - cum[:-w]` drop the
    first sample and yield N - w windows; here the prefix sum starts at 0 so all N - w + 1 full
    windows, the first included, are counted. Sorting is stable (ties keep sample order).
  * Figs. 6, 7 `alpha_sweep`, `epsilon_sweep`: AUC / LogLoss / ACC of consistency merging over
    alpha (eps = 1e-3) and eps (alpha = 0.1).
  * Fig. 9 `latency_comparison`: seconds per response of the general and the reasoning model per
    data set, and their ratio (the paper: "over 11 times greater").

`save_figure` writes any figure: these with their own drawing, others (Fig. 8, drawn in report.py) with the
`draw` function and size their caller passes.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from rallrec_jax import artifacts
from rallrec_jax.reasoning import merge as cm

# ----------------------------------------------------------------------------- checks


def _labels(labels, n: int | None = None) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be [N], got shape {y.shape}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"labels has {y.shape[0]} samples, predictions have {n}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    return y.astype(np.int64)


def _finite(x, name: str, ndim: int | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} NaN/inf values (first at {tuple(np.argwhere(bad)[0])})")
    return a


def _as_runs(preds, name: str) -> np.ndarray:
    """[N] or [N, K] -> [N, K] float64."""
    a = _finite(preds, name)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be [N] or [N, K], got shape {a.shape}")
    return a


# ----------------------------------------------------------------------------- Fig. 2


def accuracy_by_length(labels, preds, lengths, num_groups: int = 5) -> dict[str, Any]:
    """Accuracy per response-length group: labels [N], preds and lengths [N, K] (or [N]).

    Every response is one (sample, run) pair, correct when `(p > 0.5) == label`. Responses are
    sorted by length (stable) and split into `num_groups` groups of equal size (sizes differ by at
    most one, the earlier groups taking the extra responses, as `np.array_split`).
    """
    p = _as_runs(preds, "preds")
    length = _as_runs(lengths, "lengths")
    if p.shape != length.shape:
        raise ValueError(f"preds {p.shape} and lengths {length.shape} must have the same shape")
    y = _labels(labels, p.shape[0])
    correct = ((p > 0.5) == y[:, None].astype(bool)).ravel()  # [N*K]
    flat_len = length.ravel()  # [N*K]
    if not 1 <= num_groups <= flat_len.size:
        raise ValueError(f"num_groups must be in [1, {flat_len.size}] (the number of responses), got {num_groups}")
    order = np.argsort(flat_len, kind="stable")
    groups = []
    for g, idx in enumerate(np.array_split(order, num_groups)):
        groups.append({
            "group": g,
            "n": int(idx.size),
            "min_length": float(flat_len[idx].min()),
            "max_length": float(flat_len[idx].max()),
            "mean_length": float(flat_len[idx].mean()),
            "accuracy": float(correct[idx].mean()),
        })
    return {"figure": "accuracy_by_length", "num_responses": int(flat_len.size), "groups": groups}


# ----------------------------------------------------------------------------- Fig. 3


def accuracy_vs_variance(labels, preds, window: int = 1000) -> dict[str, Any]:
    """Sliding-window accuracy over samples sorted by run variance: labels [N], preds [N, K].

    A sample is correct when the mean of its K runs is > 0.5. Window i covers sorted samples
    i .. i + window - 1; each window reports its accuracy and its mean variance.
    """
    p = _as_runs(preds, "preds")
    y = _labels(labels, p.shape[0])
    n = p.shape[0]
    if not 1 <= window <= n:
        raise ValueError(f"window must be in [1, {n}] (the number of samples), got {window}")
    var = np.var(p, axis=1)  # [N] population variance, as np.var in the official code
    order = np.argsort(var, kind="stable")
    correct = ((p.mean(axis=1) > 0.5) == y.astype(bool))[order].astype(np.int64)  # [N] sorted
    cum = np.concatenate([[0], np.cumsum(correct)])  # [N+1]
    acc = (cum[window:] - cum[:-window]) / window  # [N-window+1]
    vcum = np.concatenate([[0.0], np.cumsum(var[order])])
    win_var = (vcum[window:] - vcum[:-window]) / window
    return {
        "figure": "accuracy_vs_variance",
        "window": int(window),
        "num_samples": int(n),
        "num_runs": int(p.shape[1]),
        "window_accuracy": acc.tolist(),
        "window_mean_variance": win_var.tolist(),
        "sorted_variance": var[order].tolist(),
    }


# ----------------------------------------------------------------------------- Figs. 6, 7


def _sweep(labels, reasoning_preds, general_preds, general_mean, rows_fn, param: str) -> dict[str, Any]:
    r = _as_runs(reasoning_preds, "reasoning_preds")
    g = _as_runs(general_preds, "general_preds")
    y = _labels(labels, r.shape[0])
    mean_r, var_r = cm.trace_stats(r.astype(np.float32))
    mean_g, var_g = cm.general_stats(g.astype(np.float32), general_mean)
    if mean_g.shape != mean_r.shape:
        raise ValueError(f"reasoning_preds cover {r.shape[0]} samples, general_preds {g.shape[0]}")
    rows = rows_fn(y, mean_r, var_r, mean_g, var_g)
    return {"figure": f"{param}_sweep", "param": param, "general_mean": general_mean, "rows": rows}


def alpha_sweep(labels, reasoning_preds, general_preds, alphas: Sequence[float] = cm.PAPER_ALPHAS,
                epsilon: float = cm.DEFAULT_EPSILON, general_mean: cm.GeneralMean = "first") -> dict[str, Any]:
    """Fig. 6: metrics of P_final for each alpha at fixed eps; reasoning [N, K], general [N, R] or [N]."""
    return _sweep(labels, reasoning_preds, general_preds, general_mean,
                  lambda *a: cm.sweep_alpha(*a, alphas=alphas, epsilon=epsilon), "alpha")


def epsilon_sweep(labels, reasoning_preds, general_preds, epsilons: Sequence[float] = cm.PAPER_EPSILONS,
                  alpha: float = cm.DEFAULT_ALPHA, general_mean: cm.GeneralMean = "first") -> dict[str, Any]:
    """Fig. 7: metrics of P_final for each eps at fixed alpha."""
    return _sweep(labels, reasoning_preds, general_preds, general_mean,
                  lambda *a: cm.sweep_epsilon(*a, epsilons=epsilons, alpha=alpha), "epsilon")


# ----------------------------------------------------------------------------- Fig. 9


def _summary(seconds: np.ndarray) -> dict[str, float]:
    return {"n": int(seconds.size), "mean": float(seconds.mean()), "median": float(np.median(seconds)),
            "p90": float(np.percentile(seconds, 90)), "total": float(seconds.sum())}


def latency_comparison(per_dataset: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> dict[str, Any]:
    """Seconds per response, {dataset: (general_seconds [N_g], reasoning_seconds [N_r])} -> summaries and ratio.

    `ratio` is mean reasoning latency over mean general latency per data set; `overall_ratio` is
    the mean of those ratios (the paper's "on average ... over 11 times greater").
    """
    if not per_dataset:
        raise ValueError("latency_comparison needs at least one data set")
    out = {}
    for name, pair in per_dataset.items():
        if len(pair) != 2:
            raise ValueError(f"{name}: expected (general_seconds, reasoning_seconds), got {len(pair)} items")
        g = _finite(pair[0], f"{name} general_seconds", 1)
        r = _finite(pair[1], f"{name} reasoning_seconds", 1)
        for label, a in (("general_seconds", g), ("reasoning_seconds", r)):
            if a.size == 0 or a.min() <= 0:
                raise ValueError(f"{name} {label} must be non-empty and positive")
        gs, rs = _summary(g), _summary(r)
        out[str(name)] = {"general": gs, "reasoning": rs, "ratio": rs["mean"] / gs["mean"]}
    ratios = [v["ratio"] for v in out.values()]
    return {"figure": "latency", "datasets": out, "overall_ratio": float(np.mean(ratios))}


# ----------------------------------------------------------------------------- figures


def _draw(numbers: Mapping[str, Any], fig) -> None:
    kind = numbers.get("figure")
    ax = fig.add_subplot(1, 1, 1)
    if kind == "accuracy_by_length":
        groups = numbers["groups"]
        xs = np.arange(len(groups))
        ax.bar(xs, [g["accuracy"] for g in groups], color="#1f77b4")
        ax.set_xticks(xs, [f"{g['min_length']:.0f}-{g['max_length']:.0f}" for g in groups], rotation=20)
        ax.set_xlabel("response length group")
        ax.set_ylabel("accuracy")
        accs = [g["accuracy"] for g in groups]
        ax.set_ylim(max(0.0, min(accs) - 0.05), min(1.0, max(accs) + 0.05))
    elif kind == "accuracy_vs_variance":
        acc = numbers["window_accuracy"]
        ax.plot(acc, color="#1f77b4", lw=2, label="accuracy")
        ax.set_xlabel(f"window start (samples sorted by variance, window {numbers['window']})")
        ax.set_ylabel("accuracy", color="#1f77b4")
        ax2 = ax.twinx()
        ax2.plot(numbers["window_mean_variance"], color="#ff7f0e", lw=1.5, alpha=0.7, label="variance")
        ax2.set_ylabel("variance", color="#ff7f0e")
        ax.grid(True, alpha=0.3)
    elif kind in ("alpha_sweep", "epsilon_sweep"):
        param = numbers["param"]
        rows = numbers["rows"]
        xs = [r[param] for r in rows]
        fig.delaxes(ax)
        for i, metric in enumerate(("auc", "logloss", "acc")):
            a = fig.add_subplot(1, 3, i + 1)
            a.plot(xs, [r[metric] for r in rows], marker="o")
            if param == "epsilon":
                a.set_xscale("log")
            a.set_xlabel(param)
            a.set_title(metric)
    elif kind == "latency":
        names = list(numbers["datasets"])
        xs = np.arange(len(names))
        g = [numbers["datasets"][n]["general"]["mean"] for n in names]
        r = [numbers["datasets"][n]["reasoning"]["mean"] for n in names]
        ax.bar(xs - 0.2, g, 0.4, label="general LLM")
        ax.bar(xs + 0.2, r, 0.4, label="reasoning LLM")
        ax.set_xticks(xs, names)
        ax.set_ylabel("seconds per response")
        ax.legend()
    else:
        raise ValueError(f"unknown figure kind {kind!r}; expected the output of an analysis function")


def save_figure(numbers: Mapping[str, Any], path_png: str,
                draw: Callable[[Mapping[str, Any], Any], None] | None = None,
                size: tuple[float, float] | None = None) -> tuple[str, str]:
    """Draws `numbers` into path_png and writes them as JSON beside it; returns (png_path, json_path).

    `draw(numbers, fig)` and `size` (inches) draw a figure this module does not know (report.py's Fig. 8)."""
    sizes = {"alpha_sweep": (12, 4), "epsilon_sweep": (12, 4)}
    return artifacts.save_figure(numbers, path_png, draw or _draw,
                                 size or sizes.get(numbers.get("figure"), (7, 4.5)))
