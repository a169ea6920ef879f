"""The pipeline end to end on the tiny config: killed during LoRA tuning, started again, it finishes
without redoing the earlier stages and writes the results tables. Also, without any model: which rows
the config asks for, one evaluation per distinct scoring, and the Fig. 8 table and figure."""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import types

import csv
import dataclasses

import numpy as np
import pytest

from configs import movielens as movielens_config
from configs import quickstart as quickstart_config
from configs import test as test_config
from rallrec_jax import metrics, pipeline
from rallrec_jax import report as report_lib
from rallrec_jax.data import sampling
from tests.tiny_llm import make_tiny_llm

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    folder = make_tiny_llm(tmp_path_factory.mktemp("tiny") / "llm")
    return {**os.environ, "RALLREC_TINY_LLM": str(folder)}


def _cmd(workdir):
    return [sys.executable, str(ROOT / "experiments" / "pipeline.py"), "--config", "configs/test.py:tiny",
            "--workdir", str(workdir), "--config.finetune.epochs=3", "--config.pipeline.retrieval_ablation=True"]


@pytest.mark.slow
def test_killed_during_tuning_resumes_without_redoing(tiny_env, tmp_path):
    workdir = tmp_path / "work"
    runs = workdir / "finetune" / "simple"  # one folder per run identity below it
    proc = subprocess.Popen(_cmd(workdir), cwd=ROOT, env=tiny_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        if runs.is_dir() and any(p.name.isdigit() for p in runs.glob("*/checkpoints/*")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before tuning was interrupted:\n{proc.stdout.read()[-3000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    marks = workdir / "pipeline"
    assert {p.stem for p in marks.glob("*.json")} == {"data", "retrieval", "deepfm"}
    before = {p: p.stat().st_mtime_ns for p in list(marks.glob("*.json")) + list((workdir / "retrieval").rglob("*"))
              if p.is_file()}

    again = subprocess.run(_cmd(workdir), cwd=ROOT, env=tiny_env, capture_output=True, text=True, timeout=1800)
    assert again.returncode == 0, again.stderr[-4000:]
    for stage in ("data", "retrieval", "deepfm"):
        assert f"[{stage}] up to date, skipped" in again.stdout
    logs = sorted((workdir / "logs").glob("pipeline-*.log"), key=lambda p: p.stat().st_mtime_ns)
    assert len(logs) == 2  # one per run; the INFO lines are there, not on the terminal
    assert "finetune: resumed from step" in logs[-1].read_text()
    for path, mtime in before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    report = json.loads((workdir / "report" / "results.json").read_text())
    models = {row["model"] for row in report["rows"]}
    assert {"DeepFM", "Zero-shot LLM", "RALLRec", "RALLRec+"} <= models
    assert "| Ours | RALLRec+ |" in (workdir / "report" / "results.md").read_text()
    # Fig. 8's rows: Retri.-then-Mix and the tuned model on recent items scored; ReRank is RALLRec's score.
    fig8 = {row["model"]: row["metrics"] for row in report["rows"] if row["table"] == "retrieval"}
    assert list(fig8) == ["Recent", "Retri.-then-Mix", "Mix-then-Retri.", "ReRank"]
    assert fig8["ReRank"] == next(r["metrics"] for r in report["rows"] if r["model"] == "RALLRec")
    assert (workdir / "evaluate" / "retrieval_retri_then_mix_high_tuned.npy").is_file()
    assert not (workdir / "evaluate" / "retrieval_mix3_rerank_tuned.npy").exists()
    assert (workdir / "report" / "figure8.png").is_file()
    # Every row is scored on the saved evaluation sample (a user-stratified one) and carries its intervals;
    # RALLRec+ and Table 5 on its first reasoning.num_rows rows.
    sample = sampling.EvalSample.load(workdir / "evaluate" / "sample.json")
    assert report["sample"]["row_ids"] == sample.rows.tolist() and sample.how == "stratified"
    head = sample.prefix(8)  # configs/test.py:tiny: reasoning.num_rows = 8
    assert {"History mean rating", "History + item means (LR)", "Item popularity", "DeepFM + recent ratings",
            "Tuned LLM (recent history)"} <= models
    for row in report["rows"]:
        sub = row["model"] == "RALLRec+" or row["table"] == "ablation"
        assert row["sample"] == (head if sub else sample).fingerprint(), row["model"]
        for key in ("auc", "logloss", "acc"):
            lo, hi = row["intervals"][key]
            assert lo <= row["metrics"][key] <= hi, (row["model"], key)
    pairs = {(c["a"], c["b"]) for c in report["comparisons"]}
    assert {("Tuned LLM (recent history)", "Zero-shot LLM"), ("RALLRec", "ReLLa (text retrieval)"),
            ("RALLRec+", "RALLRec"), ("RALLRec", "DeepFM")} <= pairs
    assert sample.describe() in (workdir / "report" / "results.md").read_text()
    # A third run finds everything up to date.
    third = subprocess.run(_cmd(workdir), cwd=ROOT, env=tiny_env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0 and third.stdout.count("up to date, skipped") == 7


# ----------------------------------------------------------------------------- rows, reuse, Fig. 8 (no model)


def _config(train_kind="text", retrieval_ablation=True, embedding_ablation=True):
    config = test_config.get_config()
    config.pipeline.train_kind = train_kind
    config.pipeline.retrieval_ablation = retrieval_ablation
    config.pipeline.embedding_ablation = embedding_ablation
    return config


def test_fig8_rows_follow_the_config():
    assert movielens_config.get_config().pipeline.retrieval_ablation
    assert not quickstart_config.get_config().pipeline.retrieval_ablation
    assert not any(r.table == "retrieval" for r in pipeline.evaluation_rows(_config(retrieval_ablation=False)))
    rows = pipeline.evaluation_rows(_config())
    fig8 = [r for r in rows if r.table == "retrieval"]
    assert [(r.name, r.kind, r.order, r.tuned) for r in fig8] == [
        ("Recent", None, "simple", True), ("Retri.-then-Mix", "retri_then_mix", "high", True),
        ("Mix-then-Retri.", "mix3", "high", True), ("ReRank", "mix3", "rerank", True)]
    rallrec = next(r for r in rows if r.name == "RALLRec")
    assert fig8[3].scoring == rallrec.scoring  # the default RALLRec row: scored once


def _fake_sample(n=60, seed=0):
    """A user-stratified sample of a synthetic 300-row split of 25 users, with labels."""
    rng = np.random.default_rng(seed)
    users = np.sort(rng.integers(0, 25, 300))
    s = sampling.draw(users, "test", n, "stratified", 4, seed=seed)
    return dataclasses.replace(s, labels=rng.integers(0, 2, len(s)))


class _FakeEvaluate:
    """Stands in for evaluate_lib.evaluate: records each call, writes per-row P (and the row ids, as the real one)
    that depend on the labels a little, and returns their metrics."""

    def __init__(self, sample):
        self.calls = []
        self.sample = sample

    def __call__(self, config, workdir, adapters, *, order, split, rows, histories, data, model, tokenizer, tag):
        assert adapters == "" and split == "test" and tokenizer == "tok"
        assert rows == self.sample.rows[:len(rows)].tolist()  # the sample, or a prefix of it
        assert set(histories) == ({order} if order != "simple" else set())
        self.calls.append((tag, model, order))
        rng = np.random.default_rng(len(self.calls))
        labels = self.sample.labels[:len(rows)]
        probs = np.clip(0.5 + (labels - 0.5) * rng.random() + rng.normal(0, 0.2, len(rows)), 0.01, 0.99)
        out = pathlib.Path(workdir) / "evaluate"
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / f"{tag}.npy", probs)
        (out / f"{tag}.json").write_text(json.dumps({"row_ids": rows}))
        return {"metrics": metrics.ctr_metrics(labels, probs), "row_ids": rows}


def _fake_data(sample):
    """The parts of a CTRData that the predictions file reads: official ids and the test split's columns, with
    the sample's users and labels at its rows."""
    n = sample.split_size
    users, labels = np.zeros(n, np.int64), np.zeros(n, np.int64)
    users[sample.rows], labels[sample.rows] = sample.users, sample.labels
    items = (np.arange(n) * 7) % 40
    return types.SimpleNamespace(user_ids=np.array([f"user{u:03d}" for u in range(25)]),
                                 item_ids=np.array([f"item-{i}" for i in range(40)]),
                                 samples={"test": {"user": users, "item": items, "label": labels}})


def _fake_pipeline(monkeypatch, workdir, config, sample=None):
    sample = _fake_sample() if sample is None else sample
    fake = _FakeEvaluate(sample)
    monkeypatch.setattr(pipeline.evaluate_lib, "evaluate", fake)
    monkeypatch.setattr(pipeline, "retrieved_history", lambda stage, rows, order, kind: ("history", order, kind))
    run = pipeline.Pipeline(config, workdir, progress=lambda msg: None)
    run._data, run._stage, run._sample = _fake_data(sample), "stage", sample
    run._models = lambda: ("base", "tuned", "tok")
    return run, fake


def test_identical_rows_are_evaluated_once(monkeypatch, tmp_path):
    run, fake = _fake_pipeline(monkeypatch, tmp_path, _config())
    out = run.stage_evaluate()
    rows = pipeline.evaluation_rows(run.config)
    assert len(out) == len(rows) == 13
    # Thirteen rows, nine scorings: Text-based = ReLLa (text, high), Mix-then-Retri. = Concat. w/ SSL,
    # ReRank = RALLRec, Fig. 8's Recent = Table 4's tuned model on recent history.
    assert len(fake.calls) == len({r.scoring for r in rows}) == 9
    assert [c[1] for c in fake.calls].count("base") == 1  # only the zero-shot row uses the base model
    by_name = {entry["row"]["name"]: entry for entry in out.values()}
    for dup, first in (("ReRank", "RALLRec"), ("Mix-then-Retri.", "Concat. w/ SSL"),
                       ("Text-based", "ReLLa (text retrieval)"), ("Recent", "Tuned LLM (recent history)")):
        assert by_name[dup]["metrics"] == by_name[first]["metrics"]
        assert by_name[dup]["probabilities"] == by_name[first]["probabilities"]
        assert out[by_name[dup]["same_as"]] is by_name[first]
    assert "same_as" not in by_name["Retri.-then-Mix"]
    assert ("main_recent_simple_tuned", "tuned", "simple") in fake.calls
    assert {entry["sample"] for entry in out.values()} == {run.eval_sample().fingerprint()}


def test_fig8_table_and_figure_from_two_runs(monkeypatch, tmp_path):
    work = {}
    for train_kind in ("text", ""):
        work[train_kind] = tmp_path / (train_kind or "recent")
        run, _ = _fake_pipeline(monkeypatch, work[train_kind], _config(train_kind, embedding_ablation=False))
        run.results = {"evaluate": run.stage_evaluate()}
        table = run.stage_report()
        fig8 = [r for r in table["rows"] if r["table"] == "retrieval"]
        assert [r["model"] for r in fig8] == ["Recent", "Retri.-then-Mix", "Mix-then-Retri.", "ReRank"]
        label = "RAG-enhanced" if train_kind else "Recent Behavior"
        assert {r["group"] for r in fig8} == {f"tuned on {label}"}
        md = (work[train_kind] / "report" / "results.md").read_text()
        assert "## Inference-time retrieval (Fig. 8)" in md and f"| tuned on {label} | ReRank |" in md
        assert (work[train_kind] / "report" / "figure8.png").stat().st_size > 0

    result = report_lib.figure8([work["text"], work[""]], tmp_path / "fig" / "figure8.png")
    assert pathlib.Path(result["png"]).stat().st_size > 0
    numbers = json.loads(pathlib.Path(result["json"]).read_text())
    assert numbers["methods"] == ["Recent", "Retri.-then-Mix", "Mix-then-Retri.", "ReRank"]
    assert [s["training"] for s in numbers["series"]] == ["RAG-enhanced", "Recent Behavior"]
    report = json.loads((work["text"] / "report" / "results.json").read_text())
    rerank = next(r for r in report["rows"] if r["model"] == "ReRank")["metrics"]
    assert numbers["series"][0]["auc"][3] == rerank["auc"] and numbers["series"][0]["acc"][3] == rerank["acc"]
    # The same tuning set twice: told apart by folder.
    twice = report_lib.figure8([work["text"], work["text"]], tmp_path / "twice.png")["numbers"]
    assert [s["training"] for s in twice["series"]] == ["RAG-enhanced (text)", "RAG-enhanced (text)"]

    other = json.loads((work[""] / "report" / "results.json").read_text())
    with pytest.raises(ValueError, match="one data set"):
        report_lib.figure8_numbers([report, {**other, "data": "movielens-1m"}])
    with pytest.raises(ValueError, match="one or two"):
        report_lib.figure8([work["text"]] * 3)
    with pytest.raises(FileNotFoundError, match="results.json"):
        report_lib.figure8([tmp_path / "nowhere"])
    without = tmp_path / "without"
    run, _ = _fake_pipeline(monkeypatch, without, _config(retrieval_ablation=False, embedding_ablation=False))
    run.results = {"evaluate": run.stage_evaluate()}
    run.stage_report()
    assert not (without / "report" / "figure8.png").exists()
    with pytest.raises(ValueError, match="retrieval_ablation=True"):
        report_lib.figure8([without])


def _fake_id_rows(workdir, sample):
    """The deepfm stage's summary and predictions file, as stage_deepfm writes them, with P tied to the labels."""
    rng = np.random.default_rng(9)
    names = ["DeepFM", "History mean rating", "Item mean rating", "History + item means (LR)", "Item popularity"]
    probs = {n: np.clip(0.5 + 0.3 * (sample.labels - 0.5) + rng.normal(0, 0.2, len(sample)), 0.01, 0.99) for n in names}
    (workdir / "deepfm").mkdir(parents=True, exist_ok=True)
    np.savez(workdir / "deepfm" / "predictions.npz", row_ids=sample.rows, **{f"model/{n}": p for n, p in probs.items()})
    return {"metrics": metrics.ctr_metrics(sample.labels, probs["DeepFM"]), "probabilities": "deepfm/predictions.npz",
            "baselines": {n: metrics.ctr_metrics(sample.labels, probs[n]) for n in names[1:]}}, probs


def _fake_reasoning(workdir, sample, n):
    folder = workdir / "reasoning_runs" / "fp"
    (folder / "reasoning").mkdir(parents=True)
    rng = np.random.default_rng(3)
    labels = sample.labels[:n]
    probs = {m: np.clip(labels * 0.4 + 0.3 + rng.normal(0, 0.2, n), 0.01, 0.99)
             for m in ("general (M_G)", "reasoning w/ hint", "merged (RALLRec+)")}
    np.savez(folder / "reasoning" / "probabilities.npz", row_ids=sample.rows[:n],
             **{f"model/{m}": p for m, p in probs.items()})
    rows = [{"model": m, **metrics.ctr_metrics(labels, p)} for m, p in probs.items()]
    return {"merge": {"rows": rows, "n": n, "probabilities": "reasoning/probabilities.npz"}, "folder": str(folder)}


def test_report_rows_share_the_sample_and_carry_intervals(monkeypatch, tmp_path):
    sample = _fake_sample(n=80)
    run, _ = _fake_pipeline(monkeypatch, tmp_path, _config(embedding_ablation=False), sample)
    deepfm_summary, id_probs = _fake_id_rows(tmp_path, sample)
    run.results = {"deepfm": deepfm_summary, "evaluate": run.stage_evaluate(),
                   "reasoning": _fake_reasoning(tmp_path, sample, 30)}
    table = run.stage_report()
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert saved["sample"]["row_ids"] == sample.rows.tolist() and saved["sample"]["users"] == sample.num_users
    whole, head = sample.fingerprint(), sample.prefix(30).fingerprint()
    main = {r["model"]: r for r in saved["rows"] if r["table"] == "main"}
    assert {"DeepFM", "History mean rating", "Item popularity", "Zero-shot LLM", "Tuned LLM (recent history)",
            "RALLRec", "RALLRec+"} <= set(main)
    for row in saved["rows"]:
        sub = row["model"] == "RALLRec+" or row["table"] == "ablation"
        assert row["sample"] == (head if sub else whole), row["model"]
        assert row["rows"] == (30 if sub else 80) and row["users"] == (sample.prefix(30) if sub else sample).num_users
        for key in ("auc", "logloss", "acc"):
            lo, hi = row["intervals"][key]
            assert lo <= row["metrics"][key] <= hi, (row["model"], key)
    # The intervals are the user-level bootstrap of the row's own saved P on the sample's users.
    want = metrics.bootstrap_metrics(sample.labels, id_probs["DeepFM"], sample.users, resamples=1000, seed=0)
    assert main["DeepFM"]["intervals"]["auc"] == [want["auc"]["lo"], want["auc"]["hi"]]
    assert main["DeepFM"]["metrics"]["gauc"] == want["gauc"]["value"]
    pairs = {(c["a"], c["b"]): c for c in saved["comparisons"]}
    assert {("Tuned LLM (recent history)", "Zero-shot LLM"), ("RALLRec", "ReLLa (text retrieval)"),
            ("RALLRec+", "RALLRec"), ("RALLRec", "DeepFM"), ("Tuned LLM (recent history)", "History mean rating"),
            ("Zero-shot LLM", "DeepFM")} <= set(pairs)
    plus = pairs[("RALLRec+", "RALLRec")]
    assert plus["rows"] == 30 and plus["sample"] == head and plus["lo"] <= plus["delta"] <= plus["hi"]
    md = (tmp_path / "report" / "results.md").read_text()
    assert sample.describe() in md and "## Paired comparisons (AUC difference)" in md
    assert f"| ID | DeepFM | 80 / {sample.num_users} | {main['DeepFM']['metrics']['auc']:.4f} [" in md
    assert table["markdown"] == md

    # A row scored on other rows than the sample is an error, never a silent mismatch.
    record = tmp_path / "evaluate" / "main_recent_simple_zeroshot.json"
    record.write_text(json.dumps({"row_ids": sample.rows[::-1].tolist()}))
    with pytest.raises(ValueError, match="'Zero-shot LLM' .* was scored on other rows than the evaluation sample"):
        run.stage_report()


def test_retrieval_rows_on_a_prefix_of_the_sample(monkeypatch, tmp_path):
    sample = _fake_sample(n=80)
    config = _config(embedding_ablation=False, retrieval_ablation=False)
    config.pipeline.retrieval_eval_size = 25
    run, fake = _fake_pipeline(monkeypatch, tmp_path, config, sample)
    deepfm_summary, _ = _fake_id_rows(tmp_path, sample)
    run.results = {"deepfm": deepfm_summary, "evaluate": run.stage_evaluate()}
    saved = run.stage_report()
    main = {r["model"]: r for r in saved["rows"] if r["table"] == "main"}
    head = sample.prefix(25)
    for name in ("ReLLa (text retrieval)", "Hybrid-Score", "RALLRec"):
        assert main[name]["rows"] == 25 and main[name]["sample"] == head.fingerprint(), name
        assert main[name]["users"] == head.num_users
    for name in ("Zero-shot LLM", "Tuned LLM (recent history)", "DeepFM"):
        assert main[name]["rows"] == 80 and main[name]["sample"] == sample.fingerprint(), name
    pairs = {(c["a"], c["b"]): c for c in saved["comparisons"]}
    assert pairs[("RALLRec", "ReLLa (text retrieval)")]["rows"] == 25
    assert pairs[("Tuned LLM (recent history)", "Zero-shot LLM")]["rows"] == 80
    config.pipeline.retrieval_eval_size = -1
    with pytest.raises(ValueError, match="pipeline.retrieval_eval_size=-1"):
        run.stage_evaluate()


def test_predictions_csv_holds_the_sample_and_every_rows_p(monkeypatch, tmp_path):
    """evaluate/predictions.csv: the sample's ids and labels, then each table row's saved P; the retrieval rows,
    scored on a prefix, have empty cells beyond it; the file is a stage artifact, so deleting it reruns."""
    sample = _fake_sample(n=40)
    config = _config(embedding_ablation=False, retrieval_ablation=False)
    config.pipeline.retrieval_eval_size = 15
    run, fake = _fake_pipeline(monkeypatch, tmp_path, config, sample)
    run._fingerprints = {s: "fp" for s in pipeline.STAGES}
    out = run.run_stage("evaluate", run.stage_evaluate)
    path = tmp_path / "evaluate" / "predictions.csv"
    with open(path, newline="") as f:
        lines = list(csv.reader(f))
    header, body = lines[0], lines[1:]
    assert header == ["row_id", "user_id", "item_id", "label"] + list(out)
    assert len(body) == 40
    assert [int(r[0]) for r in body] == sample.rows.tolist()
    assert [r[1] for r in body] == [f"user{u:03d}" for u in sample.users]
    assert [r[2] for r in body] == [f"item-{(r * 7) % 40}" for r in sample.rows]
    assert [int(r[3]) for r in body] == sample.labels.tolist()
    for column, tag in enumerate(out, start=4):
        saved = np.load(tmp_path / out[tag]["probabilities"])
        want = 15 if out[tag]["row"]["kind"] else 40
        assert len(saved) == want, tag
        assert [float(r[column]) for r in body[:want]] == saved.tolist()  # exact: repr round-trips
        assert all(r[column] == "" for r in body[want:])
    assert "evaluate/predictions.csv" in json.loads((tmp_path / "pipeline" / "evaluate.json").read_text())["artifacts"]
    calls = len(fake.calls)
    run.run_stage("evaluate", run.stage_evaluate)
    assert len(fake.calls) == calls  # up to date
    path.unlink()
    assert run.done("evaluate") is None
    run.run_stage("evaluate", run.stage_evaluate)
    assert path.is_file() and len(fake.calls) > calls


def test_rows_can_be_chosen_by_name():
    config = _config()
    config.pipeline.rows = ("Zero-shot LLM", "Tuned LLM (recent history)")
    assert [r.name for r in pipeline.evaluation_rows(config)] == ["Zero-shot LLM", "Tuned LLM (recent history)"]
    config.pipeline.rows = ("RALLRec", "Nope")
    with pytest.raises(ValueError, match=r"pipeline.rows names \['Nope'\]"):
        pipeline.evaluation_rows(config)


# ----------------------------------------------------------------------------- what a stage's identity covers


def _movielens_files(folder: pathlib.Path) -> pathlib.Path:
    folder.mkdir()
    (folder / "movies.dat").write_text("".join(f"{m}::Movie {m} (1999)::Drama\n" for m in range(1, 10)))
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (folder / "ratings.dat").write_text("".join(f"{u}::{m}::{1 + (u + m) % 5}::{1000 * u + m}\n"
                                                for u in (1, 2) for m in range(1, 9)))
    return folder


def _data_config(data_dir):
    config = movielens_config.get_config()
    config.data.data_dir = str(data_dir)
    config.data.build_tfds = False
    config.data.min_history = 2
    return config


def test_a_fixed_data_file_or_a_deleted_output_reruns_the_data_stage(tmp_path):
    src = _movielens_files(tmp_path / "ml")
    config = _data_config(src)
    log = []
    pipeline.Pipeline(config, tmp_path / "work", progress=log.append).run(["data"])
    pipeline.Pipeline(config, tmp_path / "work", progress=log.append).run(["data"])
    assert log == ["[data] running", log[1], "[data] up to date, skipped"]
    # A data file fixed in place (same size: only its content differs) is another input.
    text = (src / "ratings.dat").read_text()
    (src / "ratings.dat").write_text(text.replace("1::3::5::1003\n", "1::3::2::1003\n"))
    run = pipeline.Pipeline(config, tmp_path / "work", progress=log.append)
    assert run.done("data") is None
    stats = run.run(["data"])["data"]
    assert log[-2] == "[data] running" and stats["samples"] == 12
    assert json.loads((tmp_path / "work" / "data" / "movielens-1m" / "statistics.json").read_text())[
        "accounting"]["ratings"]["rows"] == 16
    # The prepared arrays deleted, the marker kept: the stage runs again (and so does preparation).
    (tmp_path / "work" / "data" / "movielens-1m" / "ctr.npz").unlink()
    log.clear()
    pipeline.Pipeline(config, tmp_path / "work", progress=log.append).run(["data"])
    assert log[0].startswith("[data] ") and log[0].endswith("ctr.npz is missing: running the stage again")
    assert log[1] == "[data] running"
    assert (tmp_path / "work" / "data" / "movielens-1m" / "ctr.npz").is_file()
    mark = json.loads((tmp_path / "work" / "pipeline" / "data.json").read_text())
    assert "data/movielens-1m/ctr.npz" in mark["artifacts"]


def test_fingerprints_cover_the_model_files(tmp_path, tiny_llm):
    model = tmp_path / "llm"
    model.mkdir()
    for f in tiny_llm.iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    config = test_config.get_config()
    config.model.path = config.retrieval.llm_path = config.reasoning.llm_path = str(model)
    before = pipeline.Pipeline(config, tmp_path / "work").fingerprints()
    cfg = json.loads((model / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-6  # another model at the same path
    (model / "config.json").write_text(json.dumps(cfg))
    after = pipeline.Pipeline(config, tmp_path / "work").fingerprints()
    assert before["data"] == after["data"] and before["deepfm"] == after["deepfm"]
    assert all(before[s] != after[s] for s in ("retrieval", "finetune", "evaluate", "reasoning", "report"))


def test_a_finished_stage_whose_checkpoint_is_damaged_is_run_again(tmp_path):
    """Issue 12.4/12.5: markers list their artifacts and done() opens them; a damaged one reruns the stage."""
    from flax import nnx

    from rallrec_jax import checkpoint
    from rallrec_jax.llm.config import LlmConfig
    from rallrec_jax.llm.model import create_model

    cfg = LlmConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                    head_dim=8, tie_word_embeddings=True)
    run = pipeline.Pipeline(_config(), tmp_path / "work", progress=lambda msg: None)
    run._fingerprints = {s: "fp" for s in pipeline.STAGES}
    folder = tmp_path / "work" / "finetune" / "simple" / "abc"
    calls = []

    def fake_finetune():
        calls.append(1)
        for step in (1, 2):
            checkpoint.save_model_state(folder / "checkpoints", step, create_model(cfg, seed=step), nnx.Param)
        checkpoint.save_model_state(folder / "best", 2, create_model(cfg, seed=2), nnx.Param)
        (folder / "result.json").write_text(json.dumps({"steps": 2}))
        return {"run_dir": str(folder), "best_adapters": str(folder / "best")}

    run.run_stage("finetune", fake_finetune)
    run.run_stage("finetune", fake_finetune)
    assert len(calls) == 1
    for f in (folder / "checkpoints" / "2").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[:10])
    assert run.done("finetune") is None
    shutil.rmtree(folder / "checkpoints")
    run.run_stage("finetune", fake_finetune)
    assert len(calls) == 2 and run.done("finetune") is not None
    mark = json.loads((tmp_path / "work" / "pipeline" / "finetune.json").read_text())
    assert mark["artifacts"] == ["finetune/simple/abc/best", "finetune/simple/abc/checkpoints",
                                 "finetune/simple/abc/result.json"]


@pytest.mark.slow
def test_a_changed_learning_rate_reruns_tuning_in_a_finished_workdir(tiny_env, tmp_path):
    """Issue 12.1 through the pipeline binary: another finetune.learning_rate on a finished workdir trains (no
    "resumed from step"), exactly as a fresh workdir with that rate does."""
    def run(workdir, *extra):
        cmd = [sys.executable, str(ROOT / "experiments" / "pipeline.py"), "--config", "configs/test.py:tiny",
               "--workdir", str(workdir), "--stages=data,finetune", "--config.pipeline.train_kind="] + list(extra)
        proc = subprocess.run(cmd, cwd=ROOT, env=tiny_env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    run(tmp_path / "work")
    changed = run(tmp_path / "work", "--config.finetune.learning_rate=0.05")
    assert "[finetune] running" in changed.stdout and "resumed from step" not in changed.stderr
    fresh = run(tmp_path / "fresh", "--config.finetune.learning_rate=0.05")
    summaries = [json.loads((w / "pipeline" / "finetune.json").read_text())["summary"]
                 for w in (tmp_path / "work", tmp_path / "fresh")]
    losses = [[json.loads(x)["loss"] for x in (pathlib.Path(s["run_dir"]) / "metrics.jsonl").read_text().splitlines()
               if "loss" in json.loads(x)] for s in summaries]
    assert losses[0] and losses[0] == losses[1]
    assert summaries[0]["last_eval"] == summaries[1]["last_eval"]
    assert "resumed from step" not in fresh.stderr
    assert len(list((tmp_path / "work" / "finetune" / "simple").iterdir())) == 2  # both rates' runs are kept
