"""The results tables (the paper's Tables 4 to 6 and Fig. 8) with their samples, intervals and paired comparisons.

Every table row is scored on the same evaluation sample (data/sampling.py), and each table says which: how
many rows of which split, how many users, how drawn (seed, per-user cap). Each row gives AUC, GAUC, LogLoss
and ACC, each with a 95% interval from a user-level bootstrap (metrics.bootstrap_metrics: the sample's users
resampled with replacement, the same resamples for every row of a sample). RALLRec+ and Table 5's reasoning
rows are scored on a prefix of the sample (`reasoning.num_rows`, itself a user-stratified sample) and carry
their own intervals. Then the comparisons the paper's claims rest on, as AUC differences with a paired
bootstrap over the same user resamples, printed as delta [lo, hi]:

  tuned vs zero-shot, tuned vs the history-mean baseline, RALLRec vs ReLLa, RALLRec vs the tuned model on recent
  history (what retrieval adds), RALLRec+ vs RALLRec (on the reasoning rows), and each LLM row vs DeepFM.

`figure8_numbers` / `figure8` turn one or two runs' results into Fig. 8, drawn here (`draw_figure8`) and written
by reasoning/analysis.py's `save_figure`; `example_trace` reads the first trace a reasoning mode wrote (for the
report and the notebook).

`results_table` takes the stages' summaries and, for the intervals, the sample and a loader of each row's saved
per-row probabilities (with the row ids they were scored on, which must be the sample's: a row scored on other
rows is an error, never a silent mismatch). Without them it gives the point metrics alone.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from rallrec_jax import metrics
from rallrec_jax.data.sampling import EvalSample

TITLES = {"main": "Main results (Table 4)", "ablation": "KP / CM ablation (Table 5)",
          "embedding": "Embeddings for retrieval (Table 6)", "retrieval": "Inference-time retrieval (Fig. 8)"}
ZERO_SHOT, TUNED_RECENT = "Zero-shot LLM", "Tuned LLM (recent history)"
RELLA, RALLREC, RALLREC_PLUS, DEEPFM = "ReLLa (text retrieval)", "RALLRec", "RALLRec+", "DeepFM"
DEEPFM_RECENT = "DeepFM + recent ratings"  # one more field: the mean of the ratings the prompt shows
HISTORY_MEAN, TWO_MEANS = "History mean rating", "History + item means (LR)"
# (a, b, why): AUC(a) - AUC(b), the comparisons the paper (and issue 13) make; each LLM row vs DeepFM is added.
COMPARISONS = ((TUNED_RECENT, ZERO_SHOT, "tuning"), (TUNED_RECENT, HISTORY_MEAN, "reads more than the ratings"),
               (TUNED_RECENT, TWO_MEANS, "vs the best rating baseline"),
               (RALLREC, RELLA, "RALLRec vs ReLLa"), (RALLREC, TUNED_RECENT, "retrieval over recent history"),
               (RALLREC, TWO_MEANS, "vs the best rating baseline"), (RALLREC_PLUS, RALLREC, "reasoning + merge"),
               (DEEPFM, TWO_MEANS, "IDs vs the two rating means"),
               (DEEPFM_RECENT, TWO_MEANS, "IDs + recent ratings vs the two means"))
METRICS = ("auc", "gauc", "logloss", "acc")

# Fig. 8's inference-time retrievals, in the paper's order: (label, kind, order). Recent = no retrieval;
# Retri.-then-Mix = half text, half ID ranking; Mix-then-Retri. = one ranking of the mixed embedding
# (RALLRec's `mix3`) without reranking; ReRank = that ranking through the eq. 8 reranker.
FIG8_RETRIEVALS = (("Recent", None, "simple"), ("Retri.-then-Mix", "retri_then_mix", "high"),
                   ("Mix-then-Retri.", "mix3", "high"), ("ReRank", "mix3", "rerank"))

Source = Mapping[str, str]  # {"file": path (relative to the workdir, or absolute), "key": array name or ""}
Loader = Callable[[Source], tuple[np.ndarray, np.ndarray]]  # -> (row ids [n], P [n])


def training_data(train_kind: str) -> str:
    """Fig. 8's name for a tuning set: "Recent Behavior" (no retrieval) or "RAG-enhanced" (text retrieval)."""
    if not train_kind:
        return "Recent Behavior"
    return "RAG-enhanced" if train_kind == "text" else f"RAG-enhanced ({train_kind})"


def collect_rows(results: Mapping, train_kind: str) -> tuple[list[dict], dict]:
    """Table rows from the stage summaries: {table, group, model, metrics (point), source}; and the merge info."""
    rows = []
    ids = results.get("deepfm") or {}
    for name, m in (ids.get("baselines") or {}).items():
        rows.append({"table": "main", "group": "Baseline", "model": name, "metrics": m,
                     "source": {"file": ids.get("probabilities", ""), "key": f"model/{name}"}})
    if ids:
        rows.append({"table": "main", "group": "ID", "model": DEEPFM, "metrics": ids["metrics"],
                     "source": {"file": ids.get("probabilities", ""), "key": f"model/{DEEPFM}"}})
    for name, m in (ids.get("variants") or {}).items():
        rows.append({"table": "main", "group": "ID", "model": name, "metrics": m,
                     "source": {"file": ids.get("probabilities", ""), "key": f"model/{name}"}})
    for entry in (results.get("evaluate") or {}).values():
        row = entry["row"]
        group = "Ours" if row["name"] == RALLREC else "LLM"
        if row["table"] == "retrieval":
            group = f"tuned on {training_data(train_kind)}"
        rows.append({"table": row["table"], "group": group, "model": row["name"], "metrics": entry["metrics"],
                     "source": {"file": entry.get("probabilities", ""), "key": ""}})
    reasoning = results.get("reasoning") or {}
    merge_info = reasoning.get("merge") or {}
    folder = reasoning.get("folder", "")
    for entry in merge_info.get("rows", []):
        m = {k: entry[k] for k in ("auc", "logloss", "acc")}
        source = {"file": f"{folder}/{merge_info['probabilities']}" if merge_info.get("probabilities") else "",
                  "key": f"model/{entry['model']}"}
        if entry["model"] == "merged (RALLRec+)":
            rows.append({"table": "main", "group": "Ours", "model": RALLREC_PLUS, "metrics": m, "source": source})
        rows.append({"table": "ablation", "group": "reasoning", "model": entry["model"], "metrics": m,
                     "source": source})
    return rows, merge_info


def _cell(m: Mapping, key: str, intervals: Mapping | None) -> str:
    value = m.get(key, float("nan"))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if not intervals or key not in intervals or any(math.isnan(x) for x in intervals[key]):
        return f"{value:.4f}"
    lo, hi = intervals[key]
    return f"{value:.4f} [{lo:.4f}, {hi:.4f}]"


def _signed(x: float) -> str:
    return f"{x:+.4f}"


def scored_probabilities(row: dict, sample: EvalSample, load: Loader) -> tuple[EvalSample, np.ndarray]:
    """The row's probabilities and the (prefix of the) sample they were scored on; an error if other rows."""
    if not row["source"].get("file"):
        raise ValueError(f"table row {row['model']!r} has no saved probabilities; rerun its stage")
    row_ids, probs = load(row["source"])
    row_ids = np.asarray(row_ids, np.int64)
    n = row_ids.shape[0]
    if probs.shape != (n,):
        raise ValueError(f"{row['source']['file']}: {probs.shape[0]} probabilities for {n} row ids")
    part = sample if n == len(sample) else sample.prefix(n)
    if n > len(sample) or not np.array_equal(row_ids, part.rows):
        raise ValueError(f"table row {row['model']!r} ({row['source']['file']}) was scored on other rows than the "
                         f"evaluation sample ({sample.describe()}); rerun its stage")
    return part, np.asarray(probs, np.float64)


def _with_intervals(row: dict, part: EvalSample, probs: np.ndarray, boot: Mapping) -> dict:
    b = metrics.bootstrap_metrics(part.labels, probs, part.users, resamples=boot["resamples"], seed=boot["seed"],
                                  level=boot["level"])
    return {**row, "metrics": {k: b[k]["value"] for k in METRICS},
            "intervals": {k: [b[k]["lo"], b[k]["hi"]] for k in METRICS},
            "rows": b["rows"], "users": b["users"], "gauc_users": b["gauc"]["users"], "sample": part.fingerprint()}


def _comparisons(main: dict[str, tuple[EvalSample, np.ndarray]], boot: Mapping) -> list[dict]:
    pairs = [(a, b, why) for a, b, why in COMPARISONS]
    llm = [name for name in main if not name.startswith(("DeepFM", "History", "Item"))]
    pairs += [(name, DEEPFM, "vs the ID baseline") for name in llm]
    out = []
    for a, b, why in pairs:
        if a not in main or b not in main or a == b:
            continue
        (sa, pa), (sb, pb) = main[a], main[b]
        n = min(len(sa), len(sb))  # a sub-sample row (RALLRec+) against a whole-sample row: on the prefix
        part = sa if len(sa) == n else sa.prefix(n)
        d = metrics.paired_auc_difference(part.labels, pa[:n], pb[:n], part.users, resamples=boot["resamples"],
                                          seed=boot["seed"], level=boot["level"])
        out.append({"a": a, "b": b, "why": why, "delta": d["delta"], "lo": d["lo"], "hi": d["hi"],
                    "share_above_zero": d["share_above_zero"], "rows": d["rows"], "users": d["users"],
                    "sample": part.fingerprint()})
    return out


def bootstrap_settings(config) -> dict:
    b = config.get("bootstrap") or {}
    return {"resamples": int(b.get("resamples", 1000)), "seed": int(b.get("seed", 0)),
            "level": float(b.get("level", 0.95))}


def results_table(results: Mapping, config, sample: EvalSample | None = None, load: Loader | None = None) -> dict:
    """Rows as the paper's Tables 4 to 6 and Fig. 8, for the evaluation sample of one data set.

    Returns {"rows": [{table, group, model, metrics, intervals, rows, users, sample}], "comparisons", "sample",
    "markdown", "data", "train_kind", "bootstrap"}; Fig. 8 rows are grouped by the tuning set (`training_data`),
    which `figure8` reads back from results.json. Without `sample` and `load`: point metrics only."""
    train_kind = config.pipeline.train_kind
    boot = bootstrap_settings(config)
    rows, merge_info = collect_rows(results, train_kind)
    comparisons: list[dict] = []
    reasoning_part = None
    if sample is not None and load is not None:
        if sample.labels is None:
            raise ValueError("the evaluation sample has no labels: draw it with sampling.evaluation_sample")
        scored, cache = [], {}
        main: dict[str, tuple[EvalSample, np.ndarray]] = {}
        for row in rows:
            key = (row["source"].get("file"), row["source"].get("key"))
            if key not in cache:
                part, probs = scored_probabilities(row, sample, load)
                cache[key] = (part, probs, _with_intervals(row, part, probs, boot))
            part, probs, done = cache[key]
            scored.append({**done, "table": row["table"], "group": row["group"], "model": row["model"]})
            if row["table"] == "main":
                main[row["model"]] = (part, probs)
            if row["table"] == "ablation":
                reasoning_part = part
        rows = scored
        comparisons = _comparisons(main, boot)
    for row in rows:
        row.pop("source", None)
    lines = [f"# RALLRec+ on {config.data.name}", ""]
    if sample is not None:
        lines += [f"Evaluation sample: {sample.describe()}. Every row below is scored on these rows "
                  f"(ids in results.json and evaluate/sample.json) unless it says otherwise.", ""]
    else:
        lines += ["No evaluation sample was given: point metrics only.", ""]
    for table, title in TITLES.items():
        chosen = [r for r in rows if r["table"] == table]
        if not chosen:
            continue
        lines += [f"## {title}", ""]
        if sample is not None and "intervals" in chosen[0]:
            first = chosen[0]
            which = ("The evaluation sample" if first["rows"] == len(sample) else
                     f"The first {first['rows']:,} rows of the evaluation sample")
            lines += [f"{which}: {first['rows']:,} rows, {first['users']:,} users. 95% intervals: user-level "
                      f"bootstrap ({boot['resamples']:,} resamples of the users, seed {boot['seed']}); GAUC over the "
                      f"{first['gauc_users']:,} users with both labels.", ""]
        lines += ["| group | model | rows / users | AUC [95%] | GAUC [95%] | LogLoss [95%] | ACC [95%] |",
                  "|---|---|---|---|---|---|---|"]
        for r in chosen:
            size = f"{r['rows']:,} / {r['users']:,}" if "rows" in r else "-"
            cells = " | ".join(_cell(r["metrics"], k, r.get("intervals")) for k in METRICS)
            lines.append(f"| {r['group']} | {r['model']} | {size} | {cells} |")
        if table in ("main", "ablation") and merge_info.get("rows"):
            sub = f"{reasoning_part.num_users:,} users, " if reasoning_part is not None else ""
            lines.append(f"\nRALLRec+ and the reasoning rows cover the first {merge_info.get('n')} rows of the "
                         f"evaluation sample ({sub}`reasoning.num_rows`), a user-stratified sample itself, with "
                         "their own intervals.")
        if table == "retrieval":
            lines.append(f"\nThe model tuned on {training_data(train_kind)} (`pipeline.train_kind={train_kind!r}`); "
                         "the other column of Fig. 8 is a run with the other tuning set (README).")
        lines.append("")
    if comparisons:
        lines += ["## Paired comparisons (AUC difference)", "",
                  f"AUC(a) - AUC(b) on the same rows, 95% interval of a paired user-level bootstrap "
                  f"({boot['resamples']:,} resamples of the users, seed {boot['seed']}): an interval above 0 says a "
                  "beats b on these users.", "",
                  "| a | b | what | rows / users | ΔAUC [95%] | resamples with Δ > 0 |", "|---|---|---|---|---|---|"]
        for c in comparisons:
            lines.append(f"| {c['a']} | {c['b']} | {c['why']} | {c['rows']:,} / {c['users']:,} | {_signed(c['delta'])} "
                         f"[{_signed(c['lo'])}, {_signed(c['hi'])}] | {100 * c['share_above_zero']:.1f}% |")
        lines.append("")
    out = {"rows": rows, "comparisons": comparisons, "markdown": "\n".join(lines), "data": config.data.name,
           "train_kind": train_kind, "bootstrap": boot}
    if sample is not None:
        out["sample"] = sample.to_json()
    return out


def npz_or_npy_loader(root) -> Loader:
    """Loads a table row's (row ids, P): `<file>.npz` holds `row_ids` and the named array; `<file>.npy` holds P
    and its sibling `<file>.json` (generation.evaluate's record) the `row_ids`."""
    import json
    import pathlib

    root = pathlib.Path(root)

    def load(source: Source) -> tuple[np.ndarray, np.ndarray]:
        path = root / source["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: rerun the stage that scored this table row")
        if path.suffix == ".npz":
            with np.load(path) as z:
                if source["key"] not in z.files:
                    raise KeyError(f"{path} has no array {source['key']!r} (has {sorted(z.files)})")
                return z["row_ids"], z[source["key"]]
        record = path.with_suffix(".json")
        if not record.is_file():
            raise FileNotFoundError(f"{record} (the row ids of {path.name}) is missing: rerun the evaluate stage")
        ids = json.loads(record.read_text()).get("row_ids")
        if ids is None:
            raise ValueError(f"{record} holds no row_ids (made before evaluation samples): rerun the evaluate stage")
        return np.asarray(ids, np.int64), np.load(path)

    return load


# ----------------------------------------------------------------------------- Fig. 8 and the example trace


def example_trace(workdir: str | os.PathLike, mode: str = "hint") -> dict | None:
    """The first finished row's first trace of a reasoning mode (for the notebook and the report)."""
    path = pathlib.Path(workdir) / "reasoning" / mode / "traces.jsonl"
    if not path.is_file():
        return None
    with open(path) as f:
        first = f.readline()
    if not first.endswith("\n"):
        return None
    rec = json.loads(first)
    return {"mode": mode, "row": rec["row"], "label": rec["label"], "p_general": rec.get("p_general"),
            "text": rec["traces"][0], "p_yes": rec["scores"]["softmax"][0]}


def figure8_numbers(tables: Sequence[Mapping]) -> dict:
    """Fig. 8's bars from one or two `results_table` outputs (one per tuning set): AUC / ACC / LogLoss of
    each inference-time retrieval, a series per run. JSON-ready, for save_figure8."""
    methods = [label for label, _, _ in FIG8_RETRIEVALS]
    series = []
    for table in tables:
        got = {r["model"]: r["metrics"] for r in table["rows"] if r["table"] == "retrieval"}
        missing = [m for m in methods if m not in got]
        if missing:
            raise ValueError(f"results of {table.get('workdir', 'a run')} lack the Fig. 8 rows {missing}; run the "
                             "pipeline with --config.pipeline.retrieval_ablation=True")
        if "train_kind" not in table:
            raise ValueError(f"results of {table.get('workdir', 'a run')} do not name their tuning set; rerun "
                             "its report stage")
        series.append({"training": training_data(table["train_kind"]), "train_kind": table["train_kind"],
                       "data": table.get("data"), "workdir": table.get("workdir"),
                       **{m: [float(got[name][m]) for name in methods] for m in ("auc", "acc", "logloss")}})
    if len({s["data"] for s in series}) > 1:
        raise ValueError(f"Fig. 8 compares tuning sets on one data set, got {[s['data'] for s in series]}")
    labels = [s["training"] for s in series]
    for s in series:  # two runs on the same tuning set: tell them apart by their folders
        if labels.count(s["training"]) > 1 and s["workdir"]:
            s["training"] += f" ({pathlib.Path(s['workdir']).name})"
    return {"figure": "inference_retrieval", "methods": methods, "series": series}


def draw_figure8(numbers: Mapping, fig) -> None:
    """Fig. 8 onto a matplotlib figure: AUC and ACC bars per inference-time retrieval, one bar per tuning set."""
    methods, series = numbers["methods"], numbers["series"]
    xs = np.arange(len(methods))
    width = 0.8 / max(len(series), 1)
    for i, metric in enumerate(("auc", "acc")):
        a = fig.add_subplot(1, 2, i + 1)
        values = [v for s in series for v in s[metric]]
        for j, s in enumerate(series):
            a.bar(xs + (j - (len(series) - 1) / 2) * width, s[metric], width, label=s["training"])
        a.set_xticks(xs, methods, rotation=15)
        a.set_ylabel(metric.upper())
        # Zoomed as the paper's axes (AUC 0.74-0.79, ACC 0.66-0.70): the differences are small.
        low, high = min(values), max(values)
        pad = max(0.01, 0.25 * (high - low))
        a.set_ylim(max(0.0, low - pad), min(1.0, high + pad))
        a.grid(True, axis="y", alpha=0.3)
        a.legend(title="training data", fontsize="small")


def save_figure8(numbers: Mapping, path_png: str | os.PathLike) -> tuple[str, str]:
    """Draws `figure8_numbers` output into path_png with its JSON beside it; returns (png_path, json_path)."""
    from rallrec_jax.reasoning import analysis

    return analysis.save_figure(numbers, str(path_png), draw=draw_figure8, size=(11, 4.5))


def figure8(workdirs: Sequence[str | os.PathLike], path_png: str | os.PathLike | None = None) -> dict:
    """Fig. 8 (AUC and ACC bars, inference-time retrieval x training data) from one or two pipeline workdirs,
    each with report/results.json holding Fig. 8 rows (e.g. one tuned on RAG-enhanced prompts, one with
    `pipeline.train_kind=""`). Writes the PNG and its JSON (default `<first workdir>/report/figure8_all.png`);
    returns {"png", "json", "numbers"}."""
    if not 1 <= len(workdirs) <= 2:
        raise ValueError(f"Fig. 8 compares one or two runs (tuning sets), got {len(workdirs)} workdirs")
    tables = []
    for workdir in workdirs:
        path = pathlib.Path(workdir).resolve() / "report" / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run the pipeline's report stage in {workdir} first")
        tables.append({**json.loads(path.read_text()), "workdir": str(path.parents[1])})
    numbers = figure8_numbers(tables)
    if path_png is None:
        path_png = pathlib.Path(workdirs[0]).resolve() / "report" / "figure8_all.png"
    png, js = save_figure8(numbers, path_png)
    return {"png": png, "json": js, "numbers": numbers}
