"""DeepFM settings against the two-bias LR baseline, on the pipeline's own evaluation sample (issue 13, item 3).

Builds the data and the test sample exactly as the pipeline does (prepare.prepare_data, sampling.evaluation_sample,
features.categorical_fields), fits the rating baselines on training rows only, then trains one DeepFM per --runs
entry and prints its AUC with the user-bootstrap interval and the paired AUC difference against
"History + item means (LR)" (metrics.bootstrap_metrics / paired_auc_difference, config.bootstrap's settings).
It also says how many of the sample's users and items have no training rows (field id 0) and what DeepFM
gives those rows.

  python benchmarks/deepfm_sweep.py --config configs/quickstart.py --workdir /tmp/deepfm_sweep \
      --runs "" --runs "max_epochs=20" --runs "fields=recent"
  python benchmarks/deepfm_sweep.py --config configs/movielens.py --config.data.data_dir=../shared/data/ml-1m \
      --config.eval_size=2000 --workdir /tmp/deepfm_sweep_ml1m --runs "fields=recent"

A run is comma-separated key=value pairs: DeepFMConfig fields (learning_rate=3e-3, max_epochs=20, dropout=0.2,
weight_decay=1e-4, embed_dim=32, batch_size=256, patience=3, early_stop_metric='logloss', ...; a value with a comma,
hidden=(64,64), needs the pairs separated by ";" instead)
over config.deepfm, and `fields=`, a '+'-joined list of extra fields: `recent` (mean of the K ratings the prompt
shows, K = evaluate.k_history, the pipeline's "DeepFM + recent ratings" row), `item_mean` (the item's smoothed
training mean rating, leave-one-out on training rows, as the LR reads it), or `no_user` (drop the user id); and
`cold_train=0.1`: the training rows of that share of the training users get the unseen user id 0 (so the id every
cold test user gets is trained).
"""
import ast
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout: configs/ importable

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from rallrec_jax import metrics  # noqa: E402
from rallrec_jax.data import features, prepare, sampling  # noqa: E402
from rallrec_jax.generation import baselines, deepfm  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/quickstart.py", "configs/*.py file", lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/deepfm_sweep", "where the prepared data is kept")
_RUNS = flags.DEFINE_multi_string("runs", [""], "one DeepFM run per entry (module docstring); '' = the config's")
_SEEDS = flags.DEFINE_integer("seeds", 1, "train each run with seeds seed..seed+N-1: each seed's AUC is printed, the "
                              "row's metrics are those of the seeds' mean probability (an ensemble when N > 1)")

TWO_MEANS = "History + item means (LR)"
EXTRA_FIELDS = ("recent", "item_mean", "no_user")


def parse_run(spec: str) -> tuple[dict, list[str], float]:
    """'learning_rate=3e-3,fields=recent+item_mean,cold_train=0.1' -> ({DeepFMConfig overrides}, [extra fields],
    the share of training users whose training rows get the unseen user id 0)."""
    overrides, extra, cold_train = {}, [], 0.0
    known = {f.name for f in dataclasses.fields(deepfm.DeepFMConfig)}
    for part in filter(None, (p.strip() for p in spec.split(";" if ";" in spec else ","))):
        key, _, value = part.partition("=")
        if key == "fields":
            extra = [f for f in value.split("+") if f]
            unknown = set(extra) - set(EXTRA_FIELDS)
            if unknown:
                raise ValueError(f"--runs {spec!r}: unknown fields {sorted(unknown)}; known: {EXTRA_FIELDS}")
        elif key == "cold_train":
            cold_train = float(value)
        elif key in known:
            overrides[key] = ast.literal_eval(value)
        else:
            raise ValueError(f"--runs {spec!r}: {key!r} is neither a DeepFMConfig field ({sorted(known)}) nor "
                             "'fields' / 'cold_train'")
    return overrides, extra, cold_train


def hide_users(table: features.FieldTable, share: float, seed: int) -> None:
    """Gives the training rows of a random `share` of the training users the unseen user id 0, so that id 0,
    which every cold test user gets, is trained as "a user we have no rows of" instead of staying at its init."""
    if share <= 0 or "user" not in table.names:
        return
    col = table.names.index("user")
    ids = np.unique(table.fields["train"][:, col])
    hidden = np.random.default_rng(seed).choice(ids, int(round(share * ids.size)), replace=False)
    train = table.fields["train"].copy()
    train[np.isin(train[:, col], hidden), col] = 0
    table.fields["train"] = train


def item_mean_bucket(fit: baselines.BaselineFit, data, split: str, leave_one_out: bool) -> np.ndarray:
    """[N] the item's smoothed training mean rating in tenth-of-a-star buckets (id 0 stays "unseen")."""
    s = data.samples[split]
    total, count = fit.item_sum[s["item"]].astype(np.float64), fit.item_count[s["item"]].astype(np.float64)
    if leave_one_out:  # a training row's own rating is in the item's sum: take it out, as the LR does
        total, count = total - s["rating"], count - 1
    mean = (total + fit.item_prior * fit.global_mean) / (count + fit.item_prior)
    lo, hi = int(data.seq_rating.min()), int(data.seq_rating.max())
    return np.clip(np.round((mean - lo) * 10), 0, 10 * (hi - lo)).astype(np.int32) + 1


def build_fields(data, extra: list[str], k_history: int, fit: baselines.BaselineFit) -> features.FieldTable:
    table = features.categorical_fields(data, history_k=k_history if "recent" in extra else 0)
    if "item_mean" in extra:
        lo, hi = int(data.seq_rating.min()), int(data.seq_rating.max())
        for split in table.fields:
            col = item_mean_bucket(fit, data, split, leave_one_out=split == "train")
            table.fields[split] = np.concatenate([table.fields[split], col[:, None]], axis=1)
        table.names.append("item_mean")
        table.cardinalities.append(10 * (hi - lo) + 2)
    if "no_user" in extra:
        keep = [i for i, n in enumerate(table.names) if n != "user"]
        table.fields = {s: f[:, keep] for s, f in table.fields.items()}
        table.names = [table.names[i] for i in keep]
        table.cardinalities = [table.cardinalities[i] for i in keep]
    return table


def subset_auc(labels: np.ndarray, p: np.ndarray, mask: np.ndarray) -> float:
    """AUC on the rows of `mask` (NaN without both labels there)."""
    y = labels[mask]
    return metrics.roc_auc(y, p[mask]) if 0 < y.sum() < y.size else float("nan")


def static_user_lr(data, fit: baselines.BaselineFit, rows: np.ndarray, split: str, l2: float) -> np.ndarray:
    """P [n] of a logistic regression on (the user's mean TRAINING rating, the item mean): the two biases an ID
    model can learn from the training rows, as the LR's features. A user without training rows gets the global
    mean; training rows leave their own rating out (as the LR's item mean does)."""
    t_users, _, t_ratings = data.training_interactions()
    u_sum = np.bincount(t_users, weights=t_ratings, minlength=data.num_users)
    u_cnt = np.bincount(t_users, minlength=data.num_users).astype(np.float64)
    prior, mu = fit.item_prior, fit.global_mean

    def feats(split_: str, rows_: np.ndarray) -> np.ndarray:
        s = data.samples[split_]
        loo = split_ == "train"
        us, uc = u_sum[s["user"][rows_]] - loo * s["rating"][rows_], u_cnt[s["user"][rows_]] - loo
        it, ic = fit.item_sum[s["item"][rows_]] - loo * s["rating"][rows_], fit.item_count[s["item"][rows_]] - loo
        return np.stack([(us + prior * mu) / (uc + prior), (it + prior * mu) / (ic + prior)], axis=1)  # [n, 2]

    train_rows = np.arange(data.num_samples("train"))
    model = baselines.fit_logistic(feats("train", train_rows), data.samples["train"]["label"], l2)
    return model.predict(feats(split, rows))


def fmt(m: dict) -> str:
    return f"{m['value']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]"


def main(argv):
    del argv
    config = _CONFIG.value
    t0 = time.perf_counter()
    data = prepare.prepare_data(config.data, _WORKDIR.value)
    sample = sampling.evaluation_sample(data, config)
    rows, users, labels = sample.rows, sample.users, sample.labels
    boot = dict(config.get("bootstrap", {}) or {})
    boot = {"resamples": int(boot.get("resamples", 1000)), "seed": int(boot.get("seed", 0)),
            "level": float(boot.get("level", 0.95))}
    b = baselines.settings(config.get("baselines"))
    k = int(config.evaluate.k_history)
    fit = baselines.fit_baselines(data, k, b["item_prior"], b["l2"])
    base = baselines.predict_baselines(fit, data, sample.split, rows)
    lr = base[TWO_MEANS]
    print(f"data {data.name}: {sample.describe()}; positives {labels.mean():.3f}; prepared in "
          f"{time.perf_counter() - t0:.1f} s")
    for name, p in base.items():
        m = metrics.bootstrap_metrics(labels, p, users, **boot)
        print(f"  {name:28s} AUC {fmt(m['auc'])} GAUC {m['gauc']['value']:.3f} LogLoss {m['logloss']['value']:.4f}")

    static = static_user_lr(data, fit, rows, sample.split, b["l2"])
    d = metrics.paired_auc_difference(labels, static, lr, users, **boot)
    print(f"  LR on (user's training mean, item mean) AUC {fmt(metrics.bootstrap_metrics(labels, static, users, **boot)['auc'])}"
          f"; vs LR {d['delta']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]")
    ids = features.categorical_fields(data)
    test = ids.fields["test"][rows]
    cold_user, cold_item = test[:, ids.names.index("user")] == 0, test[:, ids.names.index("item")] == 0
    print(f"  cold in the sample (no training rows): users {np.unique(users[cold_user]).size}/{sample.num_users} "
          f"({cold_user.mean():.1%} of rows), items {cold_item.mean():.1%} of rows; "
          f"unseen in the whole test split: {ids.unseen['test']}")
    for name, p in (("LR", lr), ("static-user LR", static)):
        print(f"  {name} on cold-user rows AUC {subset_auc(labels, p, cold_user):.3f}, warm-user rows "
              f"{subset_auc(labels, p, ~cold_user):.3f}")

    for spec in _RUNS.value:
        overrides, extra, cold_train = parse_run(spec)
        table = build_fields(data, extra, k, fit)
        hide_users(table, cold_train, seed=0)
        cfg = deepfm.DeepFMConfig.from_any({**dict(config.deepfm), **overrides})
        probs, hists, t1 = [], [], time.perf_counter()
        for seed in range(_SEEDS.value):
            model, hist = deepfm.train_deepfm(table.fields["train"], table.labels["train"],
                                              table.fields["validation"], table.labels["validation"],
                                              table.cardinalities, dataclasses.replace(cfg, seed=cfg.seed + seed))
            probs.append(deepfm.predict(model, table.fields["test"][rows]))
            hists.append(hist)
        p = np.mean(probs, axis=0)  # [n] the seeds' mean probability (one seed: that run's)
        m = metrics.bootstrap_metrics(labels, p, users, **boot)
        d = metrics.paired_auc_difference(labels, p, lr, users, **boot)
        h = hists[0]
        curve = " ".join(f"{e['valid_auc']:.3f}" for e in h["epochs"])
        cold = (f"cold-user rows AUC {subset_auc(labels, p, cold_user):.3f} mean P {p[cold_user].mean():.3f} "
                f"(sd {p[cold_user].std():.3f}), warm AUC {subset_auc(labels, p, ~cold_user):.3f} mean P "
                f"{p[~cold_user].mean():.3f}" if cold_user.any() else "no cold-user rows")
        if cold_item.any():
            cold += f"; cold-item rows ({cold_item.sum()}) mean P {p[cold_item].mean():.3f}"
        per_seed = " ".join(f"{metrics.roc_auc(labels, q):.3f}" for q in probs)
        print(f"run {spec or '(config)'!r}: AUC {fmt(m['auc'])} GAUC {m['gauc']['value']:.3f} "
              f"LogLoss {m['logloss']['value']:.4f}; vs LR {d['delta']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]; "
              f"best epoch {h['best_epoch']} of {len(h['epochs'])} (valid AUC {curve}); "
              f"seed AUCs {per_seed}; {time.perf_counter() - t1:.0f} s; {cold}", flush=True)


if __name__ == "__main__":
    app.run(main)
