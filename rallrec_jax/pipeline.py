"""The whole of RALLRec+ as one resumable stage graph, from official files to the paper's tables.

    data -> retrieval (descriptions, text embeddings, LightGCN, SSL, ordered histories)
         -> deepfm (ID baseline) -> finetune (LoRA, mixed retrieval prompts) -> evaluate (every table row)
         -> reasoning (K traces with the hint, merging) -> report (Markdown + JSON tables, figures)

Fig. 8 (inference-time retrieval x training data) spans two runs: this run's tuned model under four
retrievals (`pipeline.retrieval_ablation`) is one training-data column, the tuning set being
`pipeline.train_kind` ("text" = RAG-enhanced, "" = recent behaviour); `report.figure8(workdirs)` draws one or
two runs' columns side by side.

Each stage leaves a marker `workdir/pipeline/<stage>.json` holding the fingerprint of everything it depends
on (its settings and its inputs', the identity of the data files and of the LLM files it reads), the files
its results rest on, and its summary. A stage whose marker matches and whose files still open is skipped; a
changed setting or input file reruns that stage and everything downstream of it, a missing or damaged file
reruns that stage. One run at a time holds the workdir (`locking`). Inside a stage the work resumes too: the
retrieval artifacts are cached one by one, LoRA tuning restarts from its latest checkpoint, reasoning
traces from the last finished sample. So a killed run, started again, continues where it stopped.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence

import ml_collections
import numpy as np

from rallrec_jax import artifacts, locking, metrics, parallel, report, settings
from rallrec_jax.data import ctr, features, prepare, sampling
from rallrec_jax.generation import baselines as baselines_lib
from rallrec_jax.generation import deepfm, evaluate as evaluate_lib, examples as ex_lib, finetune as finetune_lib
from rallrec_jax.generation import inputs as inputs_lib
from rallrec_jax.generation import predictions as predictions_lib
from rallrec_jax.generation import training_rows
from rallrec_jax.generation.histories import retrieved_history
from rallrec_jax.retrieval import stage as retrieval_stage

STAGES = ("data", "retrieval", "deepfm", "finetune", "evaluate", "reasoning", "report")


@dataclasses.dataclass(frozen=True)
class EvalRow:
    """One row of the results tables: which model, which retrieval, which history order."""

    table: str  # "main" (Table 4), "embedding" (Table 6) or "retrieval" (Fig. 8)
    name: str
    tuned: bool
    kind: str | None  # retrieval embedding; None for the `simple` order
    order: str

    @property
    def scoring(self) -> tuple[str | None, str, bool]:
        """What decides the model's probabilities: two rows with equal keys are one evaluation."""
        return (self.kind, self.order, self.tuned)


def evaluation_rows(config) -> list[EvalRow]:
    """Table 4's LLM rows, Table 6's embedding rows and Fig. 8's retrieval rows that the config asks for
    (`pipeline.rows`, when set, keeps only the rows of those names: e.g. a tuning recipe scored on two rows)."""
    p = config.pipeline
    rows = [EvalRow("main", "Zero-shot LLM", False, None, "simple"),
            EvalRow("main", report.TUNED_RECENT, True, None, "simple"),
            EvalRow("main", "ReLLa (text retrieval)", True, "text", "high"),
            EvalRow("main", "Hybrid-Score", True, "hybrid", "high"),
            EvalRow("main", "RALLRec", True, config.retrieval.kind, config.retrieval.order)]
    if p.embedding_ablation:
        names = {"text": "Text-based", "colla": "ID-based", "mix": "Concat. w/o SSL", "mix3": "Concat. w/ SSL"}
        rows += [EvalRow("embedding", label, True, kind, "high") for kind, label in names.items()]
    if p.retrieval_ablation:
        rows += [EvalRow("retrieval", label, True, kind, order) for label, kind, order in report.FIG8_RETRIEVALS]
    wanted = list(p.get("rows", ()) or ())
    if wanted:
        unknown = sorted(set(wanted) - {r.name for r in rows})
        if unknown:
            raise ValueError(f"pipeline.rows names {unknown}, which this config does not produce; known: "
                             f"{sorted({r.name for r in rows})} (Table 6 / Fig. 8 rows need "
                             "pipeline.embedding_ablation / retrieval_ablation)")
        rows = [r for r in rows if r.name in wanted]
    return rows


class Pipeline:
    """Runs the stages in order; `run()` returns the results (also written as Markdown and JSON)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | os.PathLike,
                 progress: Callable[[str], None] | None = None):
        self.config = config
        self.workdir = pathlib.Path(workdir).resolve()
        self.marks = self.workdir / "pipeline"
        self.marks.mkdir(parents=True, exist_ok=True)
        self.progress = progress or (lambda msg: logging.info("%s", msg))
        self.results: dict = {}
        self._data: ctr.CTRData | None = None
        self._stage: retrieval_stage.RetrievalStage | None = None
        self._sample: sampling.EvalSample | None = None
        self._loaded_models = None
        self._fingerprints: dict[str, str] | None = None

    # ---- bookkeeping --------------------------------------------------------------------------
    def fingerprints(self) -> dict[str, str]:
        """Per stage, the fingerprint of everything its output depends on: its settings, the identity of the files
        it reads (data files; the model and tokenizer files of each LLM role) and its inputs' fingerprints.
        Computed once per Pipeline object (it hashes the small input files). Each is the fingerprint of one
        list of parts, even of one part: the values the markers of existing workdirs hold."""
        if self._fingerprints is None:
            c = self.config
            reasoning = c.get("reasoning")
            fp = {"data": artifacts.fingerprint([prepare.input_identity(c.data)])}
            sample = sampling.sample_settings(c)  # which test rows every table row is scored on
            fp["retrieval"] = artifacts.fingerprint([fp["data"], c.retrieval, c.eval_size, sample,
                                                     artifacts.model_identity(c.retrieval.llm_path)])
            fp["deepfm"] = artifacts.fingerprint([fp["data"], c.deepfm, c.eval_size, sample, c.get("baselines"),
                                                  c.evaluate.k_history])
            fp["finetune"] = artifacts.fingerprint([fp["retrieval"], inputs_lib.run_identity(
                c, self._tuning_identity(fp)), c.pipeline.train_kind])
            fp["evaluate"] = artifacts.fingerprint([fp["finetune"], c.evaluate, c.pipeline])
            fp["reasoning"] = artifacts.fingerprint([fp["evaluate"], reasoning, reasoning and {
                "llm_files": artifacts.model_identity(reasoning.llm_path),
                "tokenizer_files": artifacts.model_identity(reasoning.tokenizer) if reasoning.tokenizer else None}])
            fp["report"] = artifacts.fingerprint([*(fp[s] for s in STAGES if s != "report"), c.get("bootstrap")])
            self._fingerprints = fp
        return self._fingerprints

    def _tuning_identity(self, fp: Mapping[str, str]) -> dict:
        """What the tuning prompts' histories depend on beyond the finetune settings (`inputs.run_identity`)."""
        kind = self.config.pipeline.train_kind
        return {"train_kind": kind, "retrieval": fp["retrieval"] if kind else None}

    def finetune_dir(self) -> pathlib.Path:
        """This run's LoRA folder (keyed by everything the adapters depend on; see `inputs.run_dir`)."""
        return inputs_lib.run_dir(self.config, self.workdir, self._tuning_identity(self.fingerprints()))

    def _marker(self, stage: str) -> pathlib.Path:
        return self.marks / f"{stage}.json"

    def done(self, stage: str) -> dict | None:
        """The stage's summary when its marker matches the fingerprint and every artifact it lists still opens;
        None (run it) otherwise. A missing or damaged artifact is reported, never trusted."""
        path = self._marker(stage)
        if not path.is_file():
            return None
        try:
            mark = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
        if mark.get("fingerprint") != self.fingerprints()[stage]:
            return None
        if "artifacts" not in mark:  # a marker from before markers listed their files: check by running
            return None
        damaged = artifacts.first_unreadable(self.workdir / p for p in mark["artifacts"])
        if damaged is not None:
            self.progress(f"[{stage}] {damaged[0]} is {damaged[1]}: running the stage again")
            return None
        return mark["summary"]

    def _mark(self, stage: str, summary: dict, seconds: float) -> None:
        files = sorted({_relative(pathlib.Path(p).resolve(), self.workdir)
                        for p in self.stage_artifacts(stage, summary)})
        artifacts.atomic_write_json(self._marker(stage), {"fingerprint": self.fingerprints()[stage],
                                                          "seconds": seconds, "artifacts": files,
                                                          "summary": summary})

    def stage_artifacts(self, stage: str, summary: Mapping) -> list[pathlib.Path]:
        """The files (and checkpoint folders) a finished stage's results rest on; `done()` checks they open."""
        if stage == "data":
            folder = prepare.prepared_dir(self.config.data, self.workdir)
            return [folder / name for name in prepare.OUTPUTS]
        if stage == "retrieval":
            return sorted(self.retrieval.artifacts)
        if stage == "finetune":
            run = pathlib.Path(summary.get("run_dir") or self.finetune_dir())
            return [run / "result.json", run / "checkpoints"] + ([run / "best"] if summary.get("best_adapters") else [])
        if stage == "evaluate":
            files = [e["probabilities"] for e in summary.values()
                     if isinstance(e, Mapping) and isinstance(e.get("probabilities"), str)]
            return [self.workdir / f for p in sorted(set(files))
                    for f in (p, str(pathlib.Path(p).with_suffix(".json")))] + [self.predictions_path()]
        if stage == "reasoning":
            root = pathlib.Path(summary["folder"]) / "reasoning"
            modes = tuple(self.config.reasoning.modes)
            return [root / "general.json", root / "general.npy", root / "results.json"] + [
                root / m / "traces.jsonl" for m in modes]
        if stage == "report":
            out = self.workdir / "report"
            figures = [pathlib.Path(p) for p in summary.get("figures", {}).values()]
            return [out / "results.md", out / "results.json"] + figures
        if stage == "deepfm":  # the per-row P of DeepFM and the baselines, for the report's intervals
            return [self.workdir / summary.get("probabilities", "deepfm/predictions.npz")]
        return []

    def run_stage(self, stage: str, fn: Callable[[], dict]) -> dict:
        """Runs `fn` unless the stage is done. Multi-host: every process runs the stage (its computations span
        the global mesh), process 0 writes its files and marker, and the barriers keep the processes' views of the
        markers the same (all skip a stage or all run it)."""
        parallel.barrier(f"pipeline {stage}: start")
        summary = self.done(stage)
        if summary is not None:
            self.progress(f"[{stage}] up to date, skipped")
            return summary
        self.progress(f"[{stage}] running")
        start = time.perf_counter()
        summary = fn()
        seconds = time.perf_counter() - start
        if parallel.is_writer():
            self._mark(stage, summary, seconds)
        parallel.barrier(f"pipeline {stage}: marked")
        self.progress(f"[{stage}] done in {seconds:.1f} s")
        return summary

    # ---- shared objects -----------------------------------------------------------------------
    @property
    def data(self) -> ctr.CTRData:
        if self._data is None:
            self._data = prepare.prepare_data(self.config.data, self.workdir)
        return self._data

    @property
    def retrieval(self) -> retrieval_stage.RetrievalStage:
        if self._stage is None:
            self._stage = retrieval_stage.RetrievalStage(self.data, self.config.retrieval, self.workdir)
        return self._stage

    def eval_sample(self) -> sampling.EvalSample:
        """The evaluation sample (`eval_size` test rows drawn as `eval_sample`), saved with its row ids, users
        and labels in <workdir>/evaluate/sample.json: every table row is scored on exactly these rows."""
        if self._sample is None:
            self._sample = sampling.evaluation_sample(self.data, self.config)
            path = self.workdir / "evaluate" / "sample.json"
            try:
                same = sampling.EvalSample.load(path).to_json() == self._sample.to_json()
            except ValueError:
                same = False
            if not same and parallel.is_writer():
                self._sample.save(path)
        return self._sample

    def eval_rows(self) -> list[int]:
        return self.eval_sample().rows.tolist()

    # ---- stages -------------------------------------------------------------------------------
    def stage_data(self) -> dict:
        return self.data.statistics()

    def stage_retrieval(self) -> dict:
        rows = {"test": self.eval_rows()}
        kinds = sorted({r.kind for r in evaluation_rows(self.config) if r.kind} | {self.config.pipeline.train_kind}
                       - {""})  # "" = tuned on recent behaviour: no embedding
        summary = {"collaborative": retrieval_stage.evaluate_collaborative(self.retrieval, "validation")}
        for kind in kinds:
            self.progress(f"[retrieval] {kind} embeddings and histories")
            self.retrieval.similarity(kind)
        for row in evaluation_rows(self.config):
            if row.kind:
                self.retrieval.retrieve("test", rows["test"], row.order, row.kind)
        return summary

    def stage_deepfm(self) -> dict:
        """The rows that need no LLM, on the evaluation sample: DeepFM (user and item IDs, profile and item
        fields) and the rating baselines (generation/baselines.py), all fitted on training rows only. Their P per
        row is saved with the row ids in deepfm/predictions.npz for the report's intervals."""
        sample = self.eval_sample()
        rows = sample.rows
        b = baselines_lib.settings(self.config.get("baselines"))
        table = features.categorical_fields(self.data)
        variants = [(report.DEEPFM, table)]
        if b["deepfm_recent"]:  # the same model with the recent ratings the prompt shows as one more field
            variants.append((report.DEEPFM_RECENT,
                             features.categorical_fields(self.data, history_k=self.config.evaluate.k_history)))
        probs, trained = {}, {}
        for name, fields in variants:
            self.progress(f"[deepfm] {name}")
            model, history = deepfm.train_deepfm(fields.fields["train"], fields.labels["train"],
                                                 fields.fields["validation"], fields.labels["validation"],
                                                 fields.cardinalities, self.config.deepfm)
            probs[name] = deepfm.predict(model, fields.fields["test"][rows])
            trained[name] = {"best_epoch": history["best_epoch"], "epochs": history["epochs"], "fields": fields.names}
        history = trained[report.DEEPFM]
        fit = baselines_lib.fit_baselines(self.data, self.config.evaluate.k_history, b["item_prior"], b["l2"])
        probs.update(baselines_lib.predict_baselines(fit, self.data, sample.split, rows))
        labels = table.labels["test"][rows]
        if parallel.is_writer():
            artifacts.atomic_save_npz(self.workdir / "deepfm" / "predictions.npz", row_ids=rows,
                                      **{f"model/{k}": np.asarray(v, np.float64) for k, v in probs.items()})
        return {"metrics": metrics.ctr_metrics(labels, probs[report.DEEPFM]), "rows": len(rows),
                "sample": sample.fingerprint(), "probabilities": "deepfm/predictions.npz",
                "baselines": {name: metrics.ctr_metrics(labels, probs[name]) for name in baselines_lib.NAMES},
                "variants": {name: metrics.ctr_metrics(labels, probs[name])
                             for name in trained if name != report.DEEPFM},
                "best_epoch": history["best_epoch"], "epochs": history["epochs"], "training": trained,
                "unseen_test": table.unseen["test"]}

    def _training_histories(self) -> dict[str, ex_lib.HistoryFn]:
        """The official tuning set: per sampled train row, [high, sequential, simple] prompts whose
        retrieval uses `pipeline.train_kind` (the released LoRA was tuned on text retrieval, spec 3.2)."""
        f, kind = finetune_lib.FinetuneSettings.from_config(self.config.finetune), self.config.pipeline.train_kind
        if not kind:
            return {}
        rows, _ = training_rows.training_plan(self.data.num_samples("train"), f.sample_size, f.train_size,
                                              ["high", "sequential", "simple"], f.sample_seed)
        wanted = {"train": rows}
        return {order: retrieved_history(self.retrieval, wanted, order, kind) for order in ("high", "sequential")}

    def stage_finetune(self) -> dict:
        return finetune_lib.finetune(self.config, self.workdir, histories=self._training_histories(),
                                     data=self.data, identity=self._tuning_identity(self.fingerprints()))

    def _models(self):
        """(zero-shot base, tuned model with the best adapters merged, tokenizer), loaded once per run."""
        from flax import nnx

        if self._loaded_models is None:
            base, tokenizer = inputs_lib.load_base(self.config)
            tuned = nnx.clone(base)
            evaluate_lib.attach_adapters(tuned, inputs_lib.lora_config(self.config.lora),
                                         self.finetune_dir() / "best")
            self._loaded_models = (base, tuned, tokenizer)
        return self._loaded_models

    def rallrec_histories(self) -> dict[str, ex_lib.HistoryFn]:
        r = self.config.retrieval
        return {r.order: retrieved_history(self.retrieval, {"test": self.eval_rows()}, r.order, r.kind)}

    def stage_evaluate(self) -> dict:
        """Every table row's metrics. A row scored exactly as an earlier one (same model, retrieval kind and
        order: Fig. 8's ReRank is RALLRec's default, Mix-then-Retri. Table 6's concat w/ SSL) reuses its
        evaluation and probabilities instead of scoring the test rows twice."""
        rows = self.eval_rows()
        sample_fp = self.eval_sample().fingerprint()
        # The retrieval rows (every row with a retrieval kind) may be scored on a prefix of the sample, itself a
        # user-stratified sample (data/sampling.py), so that a small machine affords a large sample for the
        # zero-shot and recent-history rows; the report gives each row its own rows, users and intervals.
        retrieval_size = int(self.config.pipeline.get("retrieval_eval_size", 0) or 0)
        if retrieval_size < 0:
            raise ValueError(f"pipeline.retrieval_eval_size={retrieval_size}: give 0 (the whole sample) or a "
                             "number of sample rows")
        base, tuned, tokenizer = self._models()
        out = {}
        scored: dict[tuple, str] = {}  # EvalRow.scoring -> tag of its evaluation
        for row in evaluation_rows(self.config):
            tag = f"{row.table}_{row.kind or 'recent'}_{row.order}_{'tuned' if row.tuned else 'zeroshot'}"
            if row.scoring in scored:
                first = out[scored[row.scoring]]
                out[tag] = {"row": dataclasses.asdict(row), "metrics": first["metrics"], "sample": sample_fp,
                            "probabilities": first["probabilities"], "same_as": scored[row.scoring]}
                self.progress(f"[evaluate] {row.name}: as {first['row']['name']}")
                continue
            histories = {}
            row_ids = rows
            if row.kind:
                row_ids = rows[:retrieval_size] if retrieval_size else rows
                histories[row.order] = retrieved_history(self.retrieval, {"test": row_ids}, row.order, row.kind)
            self.progress(f"[evaluate] {row.name}" + (f" (first {len(row_ids)} sample rows)"
                                                       if len(row_ids) < len(rows) else ""))
            # The tuned model already holds its merged adapters: evaluate it as it is.
            result = evaluate_lib.evaluate(self.config, self.workdir, "", order=row.order, split="test",
                                           rows=row_ids, histories=histories, data=self.data,
                                           model=tuned if row.tuned else base, tokenizer=tokenizer, tag=tag)
            out[tag] = {"row": dataclasses.asdict(row), "metrics": result["metrics"], "sample": sample_fp,
                        "probabilities": f"evaluate/{tag}.npy"}
            scored[row.scoring] = tag
        self.write_predictions(out)
        return out

    def predictions_path(self) -> pathlib.Path:
        return self.workdir / "evaluate" / predictions_lib.FILENAME

    def write_predictions(self, evaluated: Mapping[str, Mapping]) -> None:
        """evaluate/predictions.csv: the sample's ids and labels and every table row's P per row
        (generation/predictions.py), from the saved .npy files, each checked to hold a prefix of the sample."""
        if not parallel.is_writer():  # the files are process 0's
            return
        sample = self.eval_sample()
        load = report.npz_or_npy_loader(self.workdir)
        columns = {}
        for tag, entry in evaluated.items():
            row = {"model": entry["row"]["name"], "source": {"file": entry["probabilities"], "key": ""}}
            _, columns[tag] = report.scored_probabilities(row, sample, load)  # an error unless a sample prefix
        predictions_lib.write_predictions(self.predictions_path(), self.data, sample.split, sample.rows, columns)

    def reasoning_dir(self) -> pathlib.Path:
        """Reasoning artifacts live in a folder per fingerprint: the reasoning stage caches P_G and the hinted
        traces by their settings, which cannot see that M_G's weights changed when the tuning reran. A new
        fingerprint (any upstream change) therefore starts a fresh folder; the same one resumes."""
        return self.workdir / "reasoning_runs" / self.fingerprints()["reasoning"]

    def stage_reasoning(self) -> dict:
        from rallrec_jax.reasoning import stage as reasoning_stage

        # M_G reads the RALLRec prompts (retrieval order). Its adapters are already merged into `tuned`,
        # so evaluate must not attach any.
        config = ml_collections.ConfigDict(self.config.to_dict())
        config.evaluate.order = self.config.retrieval.order
        config.evaluate.adapters = ""
        _, tuned, tokenizer = self._models()
        folder = self.reasoning_dir()
        summary = reasoning_stage.reason(config, folder, data=self.data, histories=self.rallrec_histories(),
                                         general_model=tuned, general_tokenizer=tokenizer)
        merged = reasoning_stage.merge_results(config, folder)
        return {"reason": summary, "merge": merged, "example_trace": report.example_trace(folder),
                "folder": str(folder)}

    # ---- the whole run ------------------------------------------------------------------------
    def run(self, stages: Sequence[str] | None = None) -> dict:
        """Runs the `stages` (default: all) in order, holding the workdir's lock (one run per workdir)."""
        wanted = list(stages or STAGES)
        unknown = [s for s in wanted if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown pipeline stages {unknown}; known: {STAGES}")
        settings.check_config(self.config)
        with locking.writer_lock(self.workdir):
            self._fingerprints = None  # what the files are now that this run owns the workdir
            steps = {"data": self.stage_data, "retrieval": self.stage_retrieval, "deepfm": self.stage_deepfm,
                     "finetune": self.stage_finetune, "evaluate": self.stage_evaluate,
                     "reasoning": self.stage_reasoning}
            for stage in STAGES:
                if stage in wanted and stage in steps:
                    self.results[stage] = self.run_stage(stage, steps[stage])
            if "report" in wanted:
                self.results["report"] = self.run_stage("report", self.stage_report)
        return self.results

    def stage_report(self) -> dict:
        """The tables with every row's intervals and the paired comparisons, from each row's saved P per row
        (checked to be the evaluation sample's rows), in report/results.md and results.json."""
        table = report.results_table(self.results, self.config, self.eval_sample(),
                                     report.npz_or_npy_loader(self.workdir))
        out = self.workdir / "report"
        out.mkdir(parents=True, exist_ok=True)
        if any(r["table"] == "retrieval" for r in table["rows"]):
            # This run's training-data column of Fig. 8; figure8() joins it with the other run's.
            png = str(out / "figure8.png")
            if parallel.is_writer():
                png = report.save_figure8(report.figure8_numbers([table]), png)[0]
            table["figures"] = {"figure8": png}
        for name, text in (("results.md", table["markdown"]), ("results.json", json.dumps(table, indent=1))):
            if parallel.is_writer():
                artifacts.atomic_write_text(out / name, text)
        self.progress("\n" + table["markdown"])
        return table


def _relative(path: pathlib.Path, root: pathlib.Path) -> str:
    """`path` relative to the workdir (markers stay valid when a workdir is moved), absolute if outside it."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def run_pipeline(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
                 stages: Sequence[str] | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """Library entry point of `experiments/pipeline.py` and the notebook."""
    return Pipeline(config, workdir, progress).run(stages)
