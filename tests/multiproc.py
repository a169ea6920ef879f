"""Runs a worker script as two jax.distributed processes on localhost (gloo CPU collectives)."""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The start of every worker: 4 fake CPU devices per process, joined into one 8-device runtime.
WORKER_PREAMBLE = textwrap.dedent("""
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    from rallrec_jax import parallel
    port, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    parallel.initialize_distributed(f"127.0.0.1:{port}", 2, pid, cpu_collectives=True)
    assert jax.device_count() == 8 and jax.local_device_count() == 4
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(worker_source: str, tmp_path: pathlib.Path, timeout: float) -> list[dict]:
    """Starts `worker_source` (after WORKER_PREAMBLE) as processes 0 and 1 (argv: port, process id, output json) and returns what
    each wrote; a failing worker fails the caller with the end of its log."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER_PREAMBLE + worker_source)
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
