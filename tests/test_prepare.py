"""The data stage as users run it: the absl binary, config overrides, reuse and re-preparation."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import movielens as movielens_config
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


def _movielens_dir(folder: pathlib.Path) -> pathlib.Path:
    """Users 1 and 2 with 8 ratings each, in the MovieLens-1M layout."""
    folder.mkdir()
    (folder / "movies.dat").write_text("".join(f"{m}::Movie {m} (1999)::Drama\n" for m in range(1, 10)))
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (folder / "ratings.dat").write_text("".join(f"{u}::{m}::{1 + (u + m) % 5}::{1000 * u + m}\n"
                                                for u in (1, 2) for m in range(1, 9)))
    return folder


def _movielens_config(data_dir):
    config = movielens_config.get_config().data
    config.data_dir = str(data_dir)
    config.build_tfds = False
    config.min_history = 2
    return config


def test_a_fixed_data_file_prepares_the_data_again(tmp_path):
    src = _movielens_dir(tmp_path / "ml")
    config = _movielens_config(src)
    first = prepare.prepare_data(config, tmp_path / "work")
    assert prepare.prepare_data(config, tmp_path / "work").fingerprint() == first.fingerprint()  # reused
    # Fix one rating in place: the same size, so only the content tells the two files apart.
    text = (src / "ratings.dat").read_text()
    assert "1::3::5::1003\n" in text
    (src / "ratings.dat").write_text(text.replace("1::3::5::1003\n", "1::3::2::1003\n"))
    again = prepare.prepare_data(config, tmp_path / "work")
    assert again.fingerprint() != first.fingerprint()
    user = int(np.flatnonzero(again.user_ids == "1")[0])
    seq = again.seq_rating[again.seq_offsets[user]:again.seq_offsets[user + 1]]
    assert seq[2] == 2 and first.seq_rating[first.seq_offsets[user] + 2] == 5  # movie 3: user 1's third rating
    stats = json.loads((tmp_path / "work" / "data" / "movielens-1m" / "statistics.json").read_text())
    assert stats["accounting"]["ratings"] == {"file": str(src / "ratings.dat"), "rows": 16, "kept": 16,
                                              "skipped": {}, "noted": {}}


def test_a_deleted_output_is_prepared_again_not_trusted(tmp_path):
    config = _movielens_config(_movielens_dir(tmp_path / "ml"))
    first = prepare.prepare_data(config, tmp_path / "work")
    out = prepare.prepared_dir(config, tmp_path / "work")
    (out / "ctr.npz").unlink()  # its stamp (config.json) is kept
    again = prepare.prepare_data(config, tmp_path / "work")
    assert (out / "ctr.npz").is_file() and again.fingerprint() == first.fingerprint()
    (out / "ctr.npz").write_bytes((out / "ctr.npz").read_bytes()[:100])  # truncated
    assert prepare.prepare_data(config, tmp_path / "work").fingerprint() == first.fingerprint()
    proc = _run("--config", "configs/movielens.py", "--workdir", str(tmp_path / "work"),
                f"--config.data.data_dir={tmp_path / 'ml'}", "--config.data.build_tfds=False",
                "--config.data.min_history=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (out / "ctr.npz").unlink()
    proc = _run("--config", "configs/movielens.py", "--workdir", str(tmp_path / "work"),
                f"--config.data.data_dir={tmp_path / 'ml'}", "--config.data.build_tfds=False",
                "--config.data.min_history=2")
    assert proc.returncode == 0 and "preparing the data set again" in proc.stderr, proc.stderr[-2000:]
