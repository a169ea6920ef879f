"""The pipeline binary as two jax.distributed processes on localhost (4 fake CPU devices each, one 8-device mesh,
gloo collectives), joined by the shared multi-host flags: it finishes, process 0 alone writes the workdir's
files, and the results equal one process on 8 fake devices (the same mesh)."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.multiproc import ROOT, _free_port
from tests.tiny_llm import make_tiny_llm

STAGES = "data,finetune"
FLAGS = ["--config", "configs/test.py:tiny", f"--stages={STAGES}", "--config.pipeline.train_kind=",
         "--config.finetune.max_steps=2"]


def _env(tiny, devices):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(RALLREC_TINY_LLM=str(tiny), JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return env


def _cmd(workdir, *extra):
    return [sys.executable, str(ROOT / "experiments" / "pipeline.py"), "--workdir", str(workdir), *FLAGS, *extra]


def _finetune(workdir):
    summary = json.loads((workdir / "pipeline" / "finetune.json").read_text())["summary"]
    lines = (pathlib.Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    return summary, [json.loads(x)["loss"] for x in lines if "loss" in json.loads(x)]


@pytest.mark.slow
def test_two_processes_run_the_pipeline_as_one_mesh(tmp_path):
    tiny = make_tiny_llm(tmp_path / "llm")
    multi, single = tmp_path / "multi", tmp_path / "single"
    port = _free_port()
    procs = [subprocess.Popen(_cmd(multi, f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
                                   f"--process_id={i}"), cwd=ROOT, env=_env(tiny, 4), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [p.communicate(timeout=900)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    one = subprocess.run(_cmd(single), cwd=ROOT, env=_env(tiny, 8), capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-4000:]

    # Each process logs to its own file; the markers are process 0's, one per stage.
    assert sorted(p.name.split("-")[1] for p in (multi / "logs").glob("pipeline-*.log")) == ["p0", "p1"]
    assert {p.stem for p in (multi / "pipeline").glob("*.json")} == set(STAGES.split(","))
    for log in logs:
        assert "[finetune] done" in log
    (summary_m, losses_m), (summary_s, losses_s) = _finetune(multi), _finetune(single)
    assert len(losses_m) == 2 and losses_m[0] != losses_m[1]
    np.testing.assert_allclose(losses_m, losses_s, rtol=1e-6)
    for key in ("eval_loss", "eval_auc", "eval_logloss", "eval_acc"):
        np.testing.assert_allclose(summary_m["last_eval"][key], summary_s["last_eval"][key], rtol=1e-6)
    assert summary_m["steps"] == summary_s["steps"] == 2
    data_m = json.loads((multi / "pipeline" / "data.json").read_text())["summary"]
    assert data_m == json.loads((single / "pipeline" / "data.json").read_text())["summary"]
