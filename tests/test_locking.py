"""One run per workdir: a second pipeline on a busy workdir refuses, naming the first; the lock of a killed run is
taken over; the process holding the lock may take it again (the pipeline calls the stages' entry points)."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from rallrec_jax import locking

ROOT = pathlib.Path(__file__).resolve().parents[1]

# A pipeline run busy in its data stage (the stage sleeps) for as long as the test needs it.
BUSY_PIPELINE = textwrap.dedent("""
    import sys, time
    from configs import test as test_config
    from rallrec_jax import pipeline
    run = pipeline.Pipeline(test_config.get_config(), sys.argv[1])
    def slow_stage():
        print("stage started", flush=True)
        time.sleep(300)
        return {}
    run.stage_data = slow_stage
    run.run(["data"])
""")


def _start(script: str, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    line = proc.stdout.readline()
    assert "started" in line or "held" in line, line + proc.stdout.read()[-3000:]
    return proc


def test_a_second_pipeline_on_a_busy_workdir_refuses_naming_the_first(tmp_path):
    workdir = tmp_path / "work"
    first = _start(BUSY_PIPELINE, str(workdir))
    try:
        second = subprocess.run([sys.executable, str(ROOT / "experiments" / "pipeline.py"), "--config",
                                 "configs/test.py", "--workdir", str(workdir), "--stages=data"],
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert second.returncode != 0, "the second run ran beside the first:\n" + second.stdout[-2000:]
        assert f"{workdir} is in use by another run (pid {first.pid} on " in second.stderr
        assert not (workdir / "pipeline" / "data.json").exists()  # neither run wrote a marker
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


HOLD = textwrap.dedent("""
    import sys, time
    from rallrec_jax import locking
    with locking.workdir_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(300)
""")


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    holder = _start(HOLD, str(tmp_path))
    record = json.loads((tmp_path / ".lock").read_text())
    assert record["pid"] == holder.pid and record["started"] <= time.time()
    with pytest.raises(locking.WorkdirBusyError, match=rf"pid {holder.pid} on .*another --workdir"):
        with locking.workdir_lock(tmp_path):
            pass
    os.killpg(holder.pid, signal.SIGKILL)  # no clean-up runs: the file still names the dead holder
    holder.wait()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == holder.pid
    with locking.workdir_lock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
        with locking.workdir_lock(tmp_path):  # the holder itself may take it again
            pass
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert (tmp_path / ".lock").read_text() == ""  # released: no holder named
