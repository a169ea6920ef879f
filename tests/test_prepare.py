"""The data stage as users run it: the absl binary, config overrides, reuse and re-preparation."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from configs import test as test_config
from rallrec_jax.data import ctr, prepare

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "prepare_data.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)


def test_prepare_binary_writes_and_reuses(tmp_path):
    workdir = tmp_path / "work"
    proc = _run("--config", "configs/test.py", "--workdir", str(workdir))
    assert proc.returncode == 0, proc.stderr
    assert "amazon:" in proc.stdout and "train" in proc.stdout
    out = workdir / "data" / "amazon"
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["samples"] == ctr.CTRData.load(out).statistics()["samples"] > 0
    assert list((workdir / "data" / "tfds").rglob("*.array_record-*"))
    stamp = (out / "config.json").stat().st_mtime_ns
    # Same config: nothing is prepared again.
    proc = _run("--config", "configs/test.py", "--workdir", str(workdir))
    assert proc.returncode == 0 and (out / "config.json").stat().st_mtime_ns == stamp
    logs = sorted((workdir / "logs").glob("prepare_data-*.log"), key=lambda p: p.stat().st_mtime_ns)  # INFO: there
    assert len(logs) == 2 and "up to date" in logs[-1].read_text() and "up to date" not in proc.stderr
    # A changed setting re-prepares.
    proc = _run("--config", "configs/test.py", "--workdir", str(workdir), "--config.data.min_history=6")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "statistics.json").read_text())["splits"]["train"]["history_length"]["min"] == 6


def test_prepare_reports_missing_files(tmp_path):
    proc = _run("--config", "configs/test.py", "--workdir", str(tmp_path),
                f"--config.data.data_dir={tmp_path}")
    assert proc.returncode != 0
    assert "Magazine_Subscriptions" in proc.stderr and "not found" in proc.stderr


def test_unknown_dataset_name(tmp_path):
    config = test_config.get_config().data
    config.name = "netflix"
    with pytest.raises(ValueError, match="'netflix' is not one of"):
        prepare.prepare_data(config, tmp_path)


@pytest.mark.slow
def test_quickstart_main_job(tmp_path):
    """The README's main job: MovieLens-100K from the recbole wheel (no network needed once cached)."""
    proc = _run("--config", "configs/quickstart.py", "--workdir", str(tmp_path / "quick"),
                "--config.data.tfds_max_history=30")
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((tmp_path / "quick" / "data" / "movielens-100k" / "statistics.json").read_text())
    # 100,000 ratings, 943 users with 20+ each: the first five of each user are history only.
    assert stats["samples"] == 100_000 - 5 * 943
    assert stats["users"] == 943 and stats["items"] == 1_682
