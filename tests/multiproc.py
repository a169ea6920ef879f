"""Runs a worker script as two jax.distributed processes on localhost (gloo CPU collectives)."""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(worker_source: str, tmp_path: pathlib.Path, timeout: float) -> list[dict]:
    """Starts `worker_source` as processes 0 and 1 (argv: port, process id, output json) and returns what
    each wrote; a failing worker fails the caller with the end of its log."""
    script = tmp_path / "worker.py"
    script.write_text(worker_source)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    procs = [subprocess.Popen([sys.executable, str(script), str(port), str(i), str(tmp_path / f"out{i}.json")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
