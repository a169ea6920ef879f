"""The pipeline end to end on the tiny config: killed during LoRA tuning, started again, it finishes
without redoing the earlier stages and writes the results tables."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from tests.tiny_llm import make_tiny_llm

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    folder = make_tiny_llm(tmp_path_factory.mktemp("tiny") / "llm")
    return {**os.environ, "RALLREC_TINY_LLM": str(folder)}


def _cmd(workdir):
    return [sys.executable, str(ROOT / "experiments" / "pipeline.py"), "--config", "configs/test.py:tiny",
            "--workdir", str(workdir), "--config.finetune.epochs=3"]


@pytest.mark.slow
def test_killed_during_tuning_resumes_without_redoing(tiny_env, tmp_path):
    workdir = tmp_path / "work"
    ckpts = workdir / "finetune" / "simple" / "checkpoints"
    proc = subprocess.Popen(_cmd(workdir), cwd=ROOT, env=tiny_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        if ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir()):
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
    assert "finetune: resumed from step" in again.stderr
    for path, mtime in before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    report = json.loads((workdir / "report" / "results.json").read_text())
    models = {row["model"] for row in report["rows"]}
    assert {"DeepFM", "Zero-shot LLM", "RALLRec", "RALLRec+"} <= models
    assert "| Ours | RALLRec+ |" in (workdir / "report" / "results.md").read_text()
    # A third run finds everything up to date.
    third = subprocess.run(_cmd(workdir), cwd=ROOT, env=tiny_env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0 and third.stdout.count("up to date, skipped") == 7
