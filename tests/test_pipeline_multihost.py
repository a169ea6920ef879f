"""The tiny pipeline end to end as two jax.distributed processes on localhost (4 fake CPU devices each, one
8-device mesh, gloo collectives), joined by the shared multi-host flags: it finishes, process 0 alone writes
the markers, and the results tables and per-row predictions equal one process on 8 fake devices."""
import csv
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.multiproc import ROOT, _free_port
from tests.tiny_llm import make_tiny_llm


def _env(tiny, devices):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(RALLREC_TINY_LLM=str(tiny), JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return env


def _cmd(workdir, *extra):
    return [sys.executable, str(ROOT / "experiments" / "pipeline.py"), "--config", "configs/test.py:tiny",
            "--workdir", str(workdir), *extra]


def _finetune(workdir):
    summary = json.loads((workdir / "pipeline" / "finetune.json").read_text())["summary"]
    lines = (pathlib.Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    return summary, [json.loads(x)["loss"] for x in lines if "loss" in json.loads(x)]


def _predictions(workdir):
    with open(workdir / "evaluate" / "predictions.csv", newline="") as f:
        lines = list(csv.reader(f))
    probs = np.array([[float(v) if v else np.nan for v in r[4:]] for r in lines[1:]])
    return lines[0], [r[:4] for r in lines[1:]], probs


def assert_same_results(multi: pathlib.Path, single: pathlib.Path) -> None:
    """Two finished workdirs hold the same tuning curve, table rows and per-row P (float32 sums in another
    order across processes: within 1e-6)."""
    (summary_m, losses_m), (summary_s, losses_s) = _finetune(multi), _finetune(single)
    assert losses_m and losses_m[0] != losses_m[-1]
    np.testing.assert_allclose(losses_m, losses_s, rtol=1e-6)
    rows = [{f"{r['table']}|{r['model']}": r["metrics"] for r in json.loads((w / "report" / "results.json")
                                                                            .read_text())["rows"]}
            for w in (multi, single)]
    assert sorted(rows[0]) == sorted(rows[1]) and "main|RALLRec+" in rows[0]
    for name, got in rows[0].items():
        for key in ("auc", "logloss", "acc"):
            assert abs(got[key] - rows[1][name][key]) < 1e-6, (name, key)
    (head_m, ids_m, p_m), (head_s, ids_s, p_s) = _predictions(multi), _predictions(single)
    assert head_m == head_s and ids_m == ids_s
    np.testing.assert_allclose(p_m, p_s, atol=1e-6)  # NaN (cells beyond a prefix) in the same places


@pytest.mark.slow
def test_two_processes_run_the_pipeline_as_one_mesh(tmp_path):
    tiny = make_tiny_llm(tmp_path / "llm")
    multi, single = tmp_path / "multi", tmp_path / "single"
    port = _free_port()
    procs = [subprocess.Popen(_cmd(multi, f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
                                   f"--process_id={i}"), cwd=ROOT, env=_env(tiny, 4), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [p.communicate(timeout=1500)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    one = subprocess.run(_cmd(single), cwd=ROOT, env=_env(tiny, 8), capture_output=True, text=True, timeout=1500)
    assert one.returncode == 0, one.stderr[-4000:]

    # Each process logs to its own file and runs every stage; the markers are process 0's, one per stage.
    assert sorted(p.name.split("-")[1] for p in (multi / "logs").glob("pipeline-*.log")) == ["p0", "p1"]
    assert {p.stem for p in (multi / "pipeline").glob("*.json")} == {
        "data", "retrieval", "deepfm", "finetune", "evaluate", "reasoning", "report"}
    for log in logs:
        assert "[report] done" in log
    assert_same_results(multi, single)
