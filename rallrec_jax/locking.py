"""One run per workdir: an advisory lock on `<workdir>/.lock` that the pipeline and the stage binaries take.

Two runs on one workdir would both run every stage and both append to its files (descriptions, traces, LoRA
metrics twice over). The lock is `fcntl.flock`, which the kernel releases when its holder dies, so the lock of
a killed run (kill -9, a crash, a lost machine on a local disk) never needs cleaning up: the next run takes it
over. The file holds the holder's pid, host, start time and command line, for the message the second run gets.
A process that already holds the lock takes it again freely (the pipeline calls the stages' entry points).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pathlib
import socket
import sys
import threading
import time
from collections.abc import Iterator

LOCK_NAME = ".lock"

_held: dict[str, int] = {}  # lock path -> how many times this process holds it
_guard = threading.Lock()


class WorkdirBusyError(RuntimeError):
    """Another live run holds the workdir's lock; the message names it."""


def _read_holder(fd: int) -> dict:
    try:
        raw = os.pread(fd, 65536, 0)
        return json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}


def describe(holder: dict) -> str:
    if not holder:
        return "another process (it has not written its details yet)"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {when}: "
            f"{holder.get('command', '?')}")


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Holds `<workdir>/.lock` for the block; another live holder is a WorkdirBusyError naming it."""
    root = pathlib.Path(workdir).expanduser().resolve()
    path = root / LOCK_NAME
    key = str(path)
    with _guard:
        if _held.get(key):
            _held[key] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield path
        finally:
            with _guard:
                _held[key] -= 1
        return
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise WorkdirBusyError(
            f"{root} is in use by another run ({describe(holder)}). Two runs on one workdir would both write its "
            f"files; wait for that run to finish, stop it, or give this one another --workdir. (The lock is {path}; "
            "the system releases it when its holder ends, even if killed.)") from None
    try:
        stale = _read_holder(fd)
        if stale:
            logging.info("workdir lock: taking over %s from an earlier run that ended (%s)", path, describe(stale))
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        with _guard:
            _held[key] = 1
        try:
            yield path
        finally:
            with _guard:
                _held.pop(key, None)
            os.ftruncate(fd, 0)  # a finished run leaves no holder behind
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def writer_lock(workdir: str | os.PathLike) -> contextlib.AbstractContextManager:
    """The workdir's lock as a multi-host run takes it: held by the process that writes the run's files
    (process 0, or the only one); the other processes write nothing of their own and take no lock."""
    from rallrec_jax import parallel

    return workdir_lock(workdir) if parallel.is_writer() else contextlib.nullcontext()
