"""The reasoning stage end to end (paper-spec 3.4-3.6): P_G -> hinted/plain traces -> trace scores -> merge.

`reason(config, workdir)` writes, under `workdir/reasoning/`:

    general.json, general.npy   P_G for the reasoning rows, from `generation.evaluate.evaluate` (which also
                                writes workdir/evaluate/reasoning_general.{json,npy}); reused (its first rows) while
                                the settings match and it covers at least the rows asked for
    <mode>/meta.json            the settings the traces were made with (mode = "plain" or "hint")
    <mode>/traces.jsonl         one JSON line per test row, appended as each batch of rows finishes: the K traces,
                                their lengths, EOS flags, and P(Yes) per trace ("softmax", "double_softmax", "text")

The reasoning rows are the first `reasoning.num_rows` rows of the evaluation sample (data/sampling.py: `eval_size`
test rows drawn as `eval_sample`, user-stratified by default), in the sample's order. That order is the draw's, so
the prefix is itself a user-stratified sample of that size, and a longer run only adds rows (`reasoning_rows`).

A killed run resumes: rows already in traces.jsonl are kept (a torn last line is dropped), and the rest are
generated with the same seeds as an uninterrupted run. Rows go to the sampler in fixed batches of
`prompts_per_batch` (batch b = the rows at sample positions [b*B, (b+1)*B)) with seed `reasoning.seed + b*B`, so
a row's traces depend only on the settings, never on where a previous run stopped; the number of rows is therefore not part of the
settings check, and a run can be extended to more rows. Both modes use the same seeds per row.

`merge_results(config, workdir)` reads those files and writes `reasoning/results.json` / `results.md` (rows:
general, reasoning w/o hint, reasoning w/ hint, merged = RALLRec+, and the merge of the plain traces), each row's
P per test row in `reasoning/probabilities.npz` (with the row ids, for the report's intervals), the alpha
and epsilon sweeps, and the figures (PNG + JSON) of Figs. 2, 3, 6, 7, 9 under `reasoning/figures/`.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import time
from collections.abc import Mapping

import jax
import numpy as np

from rallrec_jax import artifacts, checkpoint, console, metrics, parallel
from rallrec_jax.data import sampling
from rallrec_jax.generation import examples as ex_lib
from rallrec_jax.generation import prompts as prompt_lib
from rallrec_jax.llm import tokenizer as tok_lib
from rallrec_jax.reasoning import analysis, hints, merge, traces
from rallrec_jax.reasoning.settings import ReasoningRun, ReasoningSettings
from rallrec_jax.prompts import reasoning as reasoning_prompts

MODES = ("plain", "hint")
SCORES = ("softmax", "double_softmax", "text")


def _root(workdir) -> pathlib.Path:
    return checkpoint.absolute(workdir) / "reasoning"


def _evaluation_sample(run: ReasoningRun, data) -> sampling.EvalSample:
    """The rows every table row is scored on (`sampling.evaluation_sample` of the run config)."""
    return sampling.split_sample(data, run.evaluate.split, run.sample)


def reasoning_rows(run: ReasoningRun, data) -> list[int]:
    """The test row ids reasoning scores: the first `reasoning.num_rows` (0 = all) rows of the evaluation sample
    (`sampling.evaluation_sample`), in the sample's order; a prefix of a user-stratified sample is one itself."""
    return _evaluation_sample(run, data).prefix(int(run.reasoning.num_rows or 0)).rows.tolist()


def _sample_settings(run: ReasoningRun, data) -> dict:
    """What decides which row sits at each sample position (not the size: a longer sample extends a shorter)."""
    s = _evaluation_sample(run, data).prefix(1)
    return {"split": s.split, "how": s.how, "seed": s.seed, "user_cap": s.user_cap}


# ------------------------------------------------------------------------------------------- P_G


def general_settings(run: ReasoningRun, n: int, sample: dict | None = None) -> dict:
    """What P_G depends on (general.json's fingerprint)."""
    e = run.evaluate
    return {"rows": n, "sample": sample, "split": e.split, "order": e.order, "k_history": e.k_history,
            "max_prompt_tokens": e.max_prompt_tokens, "double_softmax": bool(e.double_softmax),
            "adapters": e.adapters, "model": run.model_path,
            "model_files": artifacts.model_identity(run.model_path), "data": run.data}


def general_predictions(config, run: ReasoningRun, workdir, data, *, histories=None, model=None, tokenizer=None,
                        mesh=None) -> dict:
    """P_G [N] for the N reasoning rows (`reasoning_rows`), with labels, row ids and seconds; computed by
    `evaluate.evaluate` once and then read from reasoning/general.{json,npy} while the settings match.
    `config` (the whole run config) is only handed on to the generation stage, which reads its own settings."""
    from rallrec_jax.generation import evaluate as eval_lib
    from rallrec_jax.generation.inputs import load_base

    rows = reasoning_rows(run, data)
    n = len(rows)
    settings = general_settings(run, n, _sample_settings(run, data))
    root = _root(workdir)
    meta_path, npy_path = root / "general.json", root / "general.npy"
    if meta_path.is_file() and npy_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") == artifacts.fingerprint({**settings, "rows": meta["settings"]["rows"]}) and \
                meta.get("row_ids", [])[:n] == rows:  # the same settings, at least these rows: take the first n
            return {**meta, "key": artifacts.fingerprint({**settings, "rows": None}), "row_ids": rows,
                    "probabilities": np.load(npy_path)[:n], "labels": np.asarray(meta["labels"][:n], np.int64)}
        logging.info("reasoning: general predictions out of date; recomputing")
    if model is None or tokenizer is None:
        model, tokenizer = load_base(config, None)  # evaluate shards it (and attaches adapters) itself
    start = time.perf_counter()
    res = eval_lib.evaluate(config, workdir, rows=rows, histories=histories, data=data, model=model,
                            tokenizer=tokenizer, mesh=mesh, tag="reasoning_general")
    seconds = time.perf_counter() - start
    meta = {"fingerprint": artifacts.fingerprint(settings), "settings": settings, "metrics": res["metrics"],
            "seconds": seconds, "seconds_per_sample": seconds / n, "adapters_used": res["adapters"],
            "labels": res["labels"].tolist(), "row_ids": rows,
            "source": "generation.evaluate.evaluate (tag reasoning_general)"}
    if jax.process_index() == 0:
        root.mkdir(parents=True, exist_ok=True)
        artifacts.atomic_save_npy(npy_path, res["probabilities"])
        artifacts.atomic_write_text(meta_path, json.dumps(meta, indent=1))
    return {**meta, "key": artifacts.fingerprint({**settings, "rows": None}),
            "probabilities": np.asarray(res["probabilities"]), "labels": res["labels"]}


# ------------------------------------------------------------------------------------------- traces


def trace_settings(run: ReasoningRun, mode: str, general_fp: str | None, sample: dict | None = None) -> dict:
    """What one mode's traces depend on (meta.json's fingerprint). Not the number of rows: rows are independent
    (seeded by their batch), so a run may be extended or cut short."""
    r, e = run.reasoning, run.evaluate
    return {"mode": mode, "sample": sample, "hint_bands": hint_bands(run) if mode == "hint" else None,
            "split": e.split, "order": e.order, "k_history": e.k_history,
            "max_prompt_tokens": r.max_prompt_tokens, "llm": r.llm_path,
            "llm_files": artifacts.model_identity(r.llm_path), "num_traces": r.num_traces,
            "temperature": r.temperature, "top_p": r.top_p, "top_k": r.top_k, "max_new_tokens": r.max_new_tokens,
            "seed": r.seed, "prompts_per_batch": r.prompts_per_batch, "official_prompt": bool(r.official_prompt),
            "general": general_fp if mode == "hint" else None, "data": run.data}


def read_records(path: pathlib.Path, repair: bool = False) -> dict[int, dict]:
    """row -> record from a traces.jsonl, up to a torn (unparsable or unterminated) tail; `repair` (the writer's
    resume only, never a reader that may run beside a writer) cuts that tail off the file so appends stay clean."""
    out: dict[int, dict] = {}
    if not path.is_file():
        return out
    good = 0
    with open(path, "rb") as f:
        raw = f.read()
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            rec = json.loads(line)
        except ValueError:
            break
        out[int(rec["row"])] = rec
        good += len(line)
    if good < len(raw) and repair:
        logging.warning("reasoning: dropping a torn tail of %d bytes from %s", len(raw) - good, path)
        with open(path, "r+b") as f:
            f.truncate(good)
    return out


def _prompt_texts(run: ReasoningRun, data, tokenizer, rows, histories, hint_for_row) -> tuple[list, list]:
    """(reasoning prompt texts, plain CTR prompt texts) for rows; the oldest history items are dropped while the
    reasoning prompt exceeds reasoning.max_prompt_tokens."""
    e, official = run.evaluate, run.reasoning.official_prompt
    builder = prompt_lib.PromptBuilder(data)
    limit = run.reasoning.max_prompt_tokens or None
    full, plain = [], []
    for row in rows:
        hint = hint_for_row(row)
        count = (lambda text: len(tok_lib.encode(tokenizer, [reasoning_prompts.reasoning_prompt(tokenizer, text, hint,
                                                                                      official)])[0]))
        p = builder.build(e.split, row, histories[e.order](e.split, row), e.order,
                          count_tokens=count if limit else None, max_tokens=limit)
        full.append(reasoning_prompts.reasoning_prompt(tokenizer, p.text, hint, official))
        plain.append(p.text)
    return full, plain


def run_traces(run: ReasoningRun, workdir, mode: str, data, model, tokenizer, *, general: dict | None, histories,
               mesh=None, stop_after_batches: int | None = None,
               tools: tuple[traces.TraceGenerator, traces.TraceScorer] | None = None) -> dict:
    """Generates and scores the traces of one mode, resuming from traces.jsonl. Returns its summary.
    `tools` (generator, scorer) are reused across modes so their jitted programs compile once."""
    if mode not in MODES:
        raise ValueError(f"reasoning mode {mode!r} is not one of {MODES}")
    if mode == "hint" and general is None:
        raise ValueError("the hint mode needs the general model's predictions (P_G)")
    r = run.reasoning
    row_ids = reasoning_rows(run, data)
    n = len(row_ids)
    settings = trace_settings(run, mode, general and general["key"], _sample_settings(run, data))
    folder = _root(workdir) / mode
    folder.mkdir(parents=True, exist_ok=True)
    meta_path, path = folder / "meta.json", folder / "traces.jsonl"
    fp = artifacts.fingerprint(settings)
    if meta_path.is_file() and json.loads(meta_path.read_text()).get("fingerprint") != fp:
        raise ValueError(f"{path} was made with other settings than reasoning/{mode} now has; delete {folder} "
                         "or use another workdir")
    artifacts.atomic_write_text(meta_path, json.dumps({"fingerprint": fp, "settings": settings}, indent=1))
    done = read_records(path, repair=True)
    labels = data.samples[run.evaluate.split]["label"]
    p_g = None
    if general is not None:
        if list(general.get("row_ids", row_ids))[:n] != row_ids:
            raise ValueError("reasoning: P_G was computed for other rows than the reasoning rows; rerun reason")
        p_g = dict(zip(row_ids, np.asarray(general["probabilities"]).tolist()))  # row id -> P_G
    hint_for_row = hint_function(run, p_g) if mode == "hint" else (lambda row: "")
    gen, scorer = tools or make_tools(r, model, tokenizer, mesh)
    b = int(r.prompts_per_batch)
    if b < 1 or r.num_traces < 1 or r.max_new_tokens < 1:
        raise ValueError(f"reasoning.prompts_per_batch={b}, num_traces={r.num_traces} and "
                         f"max_new_tokens={r.max_new_tokens} must all be >= 1")
    batches_run = 0
    bar = console.progress(n, f"traces ({mode})", initial=sum(1 for row in row_ids if row in done), unit="row")
    for start in range(0, n, b):
        rows = row_ids[start:start + b]
        if all(row in done for row in rows):
            continue
        if stop_after_batches is not None and batches_run >= stop_after_batches:
            break
        full, plain = _prompt_texts(run, data, tokenizer, rows, histories, hint_for_row)
        t0 = time.perf_counter()
        out = gen.generate(full, r.num_traces, r.max_new_tokens, r.temperature, r.top_p, r.top_k, r.seed + start)
        t1 = time.perf_counter()
        flat_prompts = [plain[i] for i in range(len(rows)) for _ in range(r.num_traces)]
        flat_traces = [t.text for row_traces in out for t in row_traces]
        scores = scorer.score(flat_prompts, flat_traces)
        t2 = time.perf_counter()
        lines = []
        for i, row in enumerate(rows):
            if row in done:
                continue
            sl = slice(i * r.num_traces, (i + 1) * r.num_traces)
            rec = {"row": row, "label": int(labels[row]), "traces": [t.text for t in out[i]],
                   "lengths": [t.length for t in out[i]], "finished": [t.finished for t in out[i]],
                   "scores": {k: [float(x) for x in scores[k][sl]] for k in SCORES},
                   "prompt_tokens": len(tok_lib.encode(tokenizer, [full[i]])[0]),
                   "generate_seconds": (t1 - t0) / len(rows), "score_seconds": (t2 - t1) / len(rows),
                   "p_general": None if p_g is None else float(p_g[row])}
            done[row] = rec
            lines.append(json.dumps(rec) + "\n")
        if jax.process_index() == 0:
            with open(path, "a") as f:
                f.write("".join(lines))
                f.flush()
                os.fsync(f.fileno())
        batches_run += 1
        bar.update(len(lines))
        logging.info("reasoning %s: %d/%d rows (%.1fs generate, %.1fs score)", mode, len(done), n, t1 - t0, t2 - t1)
    bar.close()
    return {"mode": mode, "rows_done": sum(1 for row in row_ids if row in done), "rows": n, "file": str(path)}


HINT_BANDS = ("follow", "official")


def hint_bands(run: ReasoningRun) -> str:
    """The scale the KP hint's bands read P_G on: "double_softmax" (P_G as it is: the official P_G, or
    `reasoning.hint_bands="official"`) or "softmax" (a plain Yes/No softmax P_G, mapped first; hints.py)."""
    bands = run.reasoning.hint_bands
    if bands not in HINT_BANDS:
        raise ValueError(f"reasoning.hint_bands={bands!r} is not one of {HINT_BANDS} (configs/base_reasoning.py)")
    return "double_softmax" if bands == "official" or run.evaluate.double_softmax else "softmax"


def hint_function(run: ReasoningRun, p_general: Mapping[int, float]):
    """row id -> the KP hint for that row's P_G, with the bands of P_G's mode (`hint_bands`)."""
    double = hint_bands(run) == "double_softmax"
    return lambda row: hints.knowledge_hint(float(p_general[row]), double)


def make_tools(r: ReasoningSettings, model, tokenizer, mesh=None) -> tuple[traces.TraceGenerator, traces.TraceScorer]:
    return (traces.TraceGenerator(model, tokenizer, mesh),
            traces.TraceScorer(model, tokenizer, batch_size=r.score_batch, mesh=mesh))


def load_reasoning_model(r: ReasoningSettings, mesh=None):
    """(model, tokenizer) of M_R: reasoning.llm_path ("" = the SmolLM2-135M-Instruct GGUF)."""
    from rallrec_jax import assets
    from rallrec_jax.llm import weights

    path = r.llm_path or str(assets.smollm2_gguf())
    model = weights.load(path, mesh, param_dtype=r.param_dtype, dtype=r.dtype)
    return model, tok_lib.load_tokenizer(r.tokenizer or path)


def reason(config, workdir, *, data=None, histories: Mapping[str, ex_lib.HistoryFn] | None = None, model=None,
           tokenizer=None, general_model=None, general_tokenizer=None, mesh=None,
           stop_after_batches: int | None = None) -> dict:
    """P_G (if a mode needs it or merging will), then the traces and scores of every mode in
    reasoning.modes; resumable. `histories` adds retrieval orders (as `evaluate`); `model`/`tokenizer` are M_R,
    `general_*` M_G (default: loaded from the config). Returns a summary with the seconds each part took."""
    from rallrec_jax.data import prepare

    run = ReasoningRun.from_config(config)
    r = run.reasoning
    modes = r.modes
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"reasoning.modes {bad} not in {MODES}")
    mesh = parallel.make_mesh(config.get("mesh") and dict(config.mesh)) if mesh is None else mesh
    data = prepare.prepare_data(config.data, workdir) if data is None else data
    orders = {"simple": ex_lib.simple_history(data, run.evaluate.k_history)}
    orders.update(histories or {})
    if run.evaluate.order not in orders:
        raise ValueError(f"evaluate.order {run.evaluate.order!r} has no history function (have {sorted(orders)})")
    t0 = time.perf_counter()
    general = general_predictions(config, run, workdir, data, histories=histories, model=general_model,
                                  tokenizer=general_tokenizer, mesh=mesh)
    summary = {"general": {"metrics": general["metrics"], "seconds": general["seconds"]},
               "general_wall_seconds": time.perf_counter() - t0}
    if model is None or tokenizer is None:
        model, tokenizer = load_reasoning_model(r, None)
    tools = make_tools(r, model, tokenizer, mesh)
    for mode in modes:
        t = time.perf_counter()
        summary[mode] = run_traces(run, workdir, mode, data, model, tokenizer, general=general, histories=orders,
                                   mesh=mesh, stop_after_batches=stop_after_batches, tools=tools)
        summary[mode]["wall_seconds_this_run"] = time.perf_counter() - t
    return summary


# ------------------------------------------------------------------------------------------- merge


def load_mode(workdir, mode: str, row_ids, score: str) -> dict:
    """[N, K] trace probabilities, lengths and per-row seconds of one finished mode, for the test rows `row_ids`
    (in that order; an int N means rows 0..N-1)."""
    if score not in SCORES:
        raise ValueError(f"reasoning.score {score!r} is not one of {SCORES}")
    row_ids = list(range(row_ids)) if isinstance(row_ids, int) else [int(r) for r in row_ids]
    n = len(row_ids)
    path = _root(workdir) / mode / "traces.jsonl"
    recs = read_records(path)
    missing = [row for row in row_ids if row not in recs]
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} of {n} rows (first {missing[:5]}); run reason first")
    rows = [recs[row] for row in row_ids]
    return {"preds": np.array([rec["scores"][score] for rec in rows], np.float64),  # [N, K]
            "lengths": np.array([rec["lengths"] for rec in rows], np.float64),  # [N, K]
            "labels": np.array([rec["label"] for rec in rows], np.int64),
            "generate_seconds": np.array([rec["generate_seconds"] for rec in rows]),
            "score_seconds": np.array([rec["score_seconds"] for rec in rows]),
            "finished": float(np.mean([rec["finished"] for rec in rows]))}


def _row(name: str, labels, probs, **extra) -> dict:
    return {"model": name, **metrics.ctr_metrics(labels, probs), **extra}


def merge_results(config, workdir) -> dict:
    """Results rows, sweeps and figures from the files `reason` wrote (see the module docstring)."""
    run = ReasoningRun.from_config(config)
    r = run.reasoning
    root = _root(workdir)
    meta_path = root / "general.json"
    if not meta_path.is_file():
        raise ValueError(f"{meta_path} not found; run reason first")
    gmeta = json.loads(meta_path.read_text())
    p_g = np.load(root / "general.npy")
    labels = np.asarray(gmeta["labels"], np.int64)
    row_ids = [int(x) for x in gmeta.get("row_ids", range(len(labels)))]
    if r.merge_rows:  # the first rows only (e.g. what a still-running reason has finished)
        if r.merge_rows > len(labels):
            raise ValueError(f"reasoning.merge_rows={r.merge_rows} exceeds the {len(labels)} rows of general.json")
        p_g, labels, row_ids = p_g[: r.merge_rows], labels[: r.merge_rows], row_ids[: r.merge_rows]
    n = len(labels)
    probabilities = {"general (M_G)": p_g}
    rows = [_row("general (M_G)", labels, p_g, seconds=gmeta["seconds_per_sample"] * n,
                 seconds_per_sample=gmeta["seconds_per_sample"])]
    fig_dir = root / "figures"
    figures, sweeps, modes = {}, {}, {}
    for mode in r.modes:
        m = load_mode(workdir, mode, row_ids, r.score)
        if not np.array_equal(m["labels"], labels):
            raise ValueError(f"reasoning/{mode} labels differ from general.json: the rows do not match")
        modes[mode] = m
        mean_r, var_r = (np.asarray(x, np.float64) for x in merge.trace_stats(m["preds"]))
        secs = float(m["generate_seconds"].sum() + m["score_seconds"].sum())
        probabilities[f"reasoning {'w/' if mode == 'hint' else 'w/o'} hint"] = mean_r
        rows.append(_row(f"reasoning {'w/' if mode == 'hint' else 'w/o'} hint", labels, mean_r, K=m["preds"].shape[1],
                         seconds=secs, seconds_per_sample=secs / n, mean_trace_tokens=float(m["lengths"].mean()),
                         finished_fraction=m["finished"]))
        mean_g, var_g = merge.general_stats(p_g.astype(np.float64), r.general_mean)
        fused = np.asarray(merge.merge(mean_r, var_r, mean_g, var_g, r.alpha, r.epsilon))
        name = "merged (RALLRec+)" if mode == "hint" else "merged plain traces (w/o KP, w/ CM)"
        probabilities[name] = fused
        rows.append(_row(name, labels, fused, alpha=r.alpha, epsilon=r.epsilon, K=m["preds"].shape[1],
                         seconds=secs + gmeta["seconds_per_sample"] * n))
        figures[f"{mode}_length"] = analysis.accuracy_by_length(labels, m["preds"], m["lengths"],
                                                                min(r.length_groups, m["preds"].size))
        figures[f"{mode}_variance"] = analysis.accuracy_vs_variance(labels, m["preds"], min(r.variance_window, n))
        sweeps[f"{mode}_alpha"] = analysis.alpha_sweep(labels, m["preds"], p_g, r.alphas, r.epsilon, r.general_mean)
        sweeps[f"{mode}_epsilon"] = analysis.epsilon_sweep(labels, m["preds"], p_g, r.epsilons, r.alpha,
                                                           r.general_mean)
    latency_mode = "hint" if "hint" in modes else next(iter(modes), None)
    if latency_mode is not None:
        m = modes[latency_mode]
        k = m["preds"].shape[1]
        per_response = m["generate_seconds"] / k  # sampled together: a row's K traces share one call
        general_per_sample = np.full(n, gmeta["seconds_per_sample"])
        figures["latency"] = analysis.latency_comparison({run.dataset: (general_per_sample, per_response)})
    saved = {}
    if jax.process_index() == 0:
        for name, numbers in {**figures, **sweeps}.items():
            saved[name] = analysis.save_figure(numbers, str(fig_dir / f"{name}.png"))[0]
    if jax.process_index() == 0:  # each row's P per test row, for the report's intervals and paired comparisons
        artifacts.atomic_save_npz(root / "probabilities.npz", row_ids=np.asarray(row_ids, np.int64), labels=labels,
                                  **{f"model/{name}": np.asarray(p, np.float64) for name, p in probabilities.items()})
    result = {"rows": rows, "n": n, "row_ids": row_ids, "probabilities": "reasoning/probabilities.npz",
              "score": r.score, "general_mean": r.general_mean, "sweeps": sweeps,
              "figures": saved, "general_settings": gmeta["settings"],
              "latency": figures.get("latency")}
    if jax.process_index() == 0:
        artifacts.atomic_write_text(root / "results.json", json.dumps(result, indent=1, default=str))
        artifacts.atomic_write_text(root / "results.md", results_table(rows))
    return result


def results_table(rows) -> str:
    """Markdown table of the results rows: AUC / LogLoss / ACC, K and seconds."""
    lines = ["| model | AUC | LogLoss | ACC | K | seconds |", "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['auc']:.4f} | {row['logloss']:.4f} | {row['acc']:.4f} | "
                     f"{row.get('K', '-')} | {row.get('seconds', float('nan')):.1f} |")
    return "\n".join(lines) + "\n"
