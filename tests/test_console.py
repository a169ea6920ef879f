"""The console a person reads: stage lines, progress bars, the results table and warnings on the terminal;
library INFO logging (orbax, absl, jax, transformers, ours) in `<workdir>/logs/<name>-<timestamp>.log`;
`--log_to_console` brings it back to the terminal."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests.tiny_llm import make_tiny_llm

ROOT = pathlib.Path(__file__).resolve().parents[1]

# An INFO record as absl writes it (I1202 03:50:43.321 ...), as logging's default format writes it, or the
# orbax checkpoint lines the issue showed.
INFO_LINE = re.compile(r"^I\d{4} \d\d:\d\d:\d\d|^INFO[: ]|checkpoint_manager|Save Finalize|_NonBlockingMetadataStore")


def _lines(text: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]+", text) if line.strip()]


def _info_lines(text: str) -> list[str]:
    return [line for line in _lines(text) if INFO_LINE.search(line)]


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **extra}


SETUP_SCRIPT = r'''
import logging, sys, warnings
from absl import logging as absl_logging
from rallrec_jax import console
path = console.setup(sys.argv[1], "probe", log_to_console=sys.argv[2] == "1")
absl_logging.info("absl info line")
logging.getLogger("orbax.checkpoint").info("orbax info line")
logging.getLogger("jax._src.xla_bridge").info("jax info line")
from transformers.utils import logging as hf_logging
hf_logging.get_logger("transformers.modeling_utils").info("transformers info line")
logging.getLogger("rallrec_jax.retrieval.lightgcn").warning("a warning line")
warnings.warn("a python warning")
console.say("[stage] a stage line")
with console.progress(3, "bar") as bar:
    for _ in range(3):
        bar.update(1)
print("LOG=" + str(path))
'''


@pytest.mark.parametrize("to_console", [False, True])
def test_setup_sends_info_to_the_file_and_warnings_to_both(tmp_path, to_console):
    proc = subprocess.run([sys.executable, "-c", SETUP_SCRIPT, str(tmp_path), "1" if to_console else "0"],
                          capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = pathlib.Path(proc.stdout.split("LOG=")[1].strip())
    assert path.parent == tmp_path / "logs" and re.fullmatch(r"probe-\d{8}-\d{6}\.log", path.name)
    log = path.read_text()
    infos = ["absl info line", "orbax info line", "jax info line", "transformers info line"]
    for line in infos + ["a warning line", "a python warning", "[stage] a stage line"]:
        assert line in log, line
    for line in infos:
        assert (line in proc.stderr) == to_console, line
    assert "a warning line" in proc.stderr and "UserWarning: a python warning" in proc.stderr
    assert "[stage] a stage line" in proc.stdout and "[stage] a stage line" not in proc.stderr
    assert "bar: 100%" in proc.stderr  # the bar is on stderr, not in the log
    assert "bar:" not in log


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    return _env(RALLREC_TINY_LLM=str(make_tiny_llm(tmp_path_factory.mktemp("tiny") / "llm")))


@pytest.mark.slow
def test_tiny_pipeline_terminal_has_no_library_info(tiny_env, tmp_path):
    workdir = tmp_path / "work"
    cmd = [sys.executable, str(ROOT / "experiments" / "pipeline.py"), "--config", "configs/test.py:tiny",
           "--workdir", str(workdir)]
    run = subprocess.run(cmd, cwd=ROOT, env=tiny_env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-4000:]
    assert _info_lines(run.stdout + "\n" + run.stderr) == []
    for stage in ("data", "retrieval", "deepfm", "finetune", "evaluate", "reasoning", "report"):
        assert f"[{stage}] running" in run.stdout and f"[{stage}] done in" in run.stdout
    assert "| Ours | RALLRec+ |" in run.stdout  # the results table
    for bar in ("LightGCN", "SSL", "title embeddings", "scoring", "traces (plain)", "traces (hint)"):
        assert f"{bar}: 100%" in run.stderr, bar
    others = [line for line in _lines(run.stderr) if not re.match(r"^[\w ()]+: +\d+%\|", line)]
    assert len(others) < 10, others  # besides the bars, at most a few warnings

    logs = list((workdir / "logs").glob("pipeline-*.log"))
    assert len(logs) == 1
    log = logs[0].read_text()
    assert len(_info_lines(log)) > 50  # orbax's checkpoint lines and the rest are kept here
    assert "checkpoint_manager" in log and "LightGCN {'epoch': 2" in log and "[report] done in" in log

    again = subprocess.run(cmd + ["--stages=report", "--log_to_console", "--noprogress"], cwd=ROOT, env=tiny_env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "[report] up to date, skipped" in again.stdout
    assert any("log file of pipeline" in line for line in _info_lines(again.stderr))
    assert len(list((workdir / "logs").glob("pipeline-*.log"))) == 2
