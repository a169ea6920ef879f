"""What a person sees on the terminal: the stage lines, a progress bar per long loop, the results table and
warnings. Library INFO logging (orbax's checkpoint chatter, absl, jax, transformers, our own per-epoch lines)
goes to a log file under the workdir instead, `<workdir>/logs/<name>-<timestamp>.log`; `log_to_console=True`
(the binaries' `--log_to_console`) shows it on the terminal as well.

`setup()` is called once by each command-line main (rallrec_jax/cli.py). Library code only uses `say()` for a
line meant for the person and `progress()` for a bar; without `setup()` (a notebook, a test) both still work:
`say` prints, the bars show, and logging stays as the caller configured it.
"""
from __future__ import annotations

import logging
import os
import pathlib
import sys
import time

from tqdm.auto import tqdm

FORMAT = "%(levelname).1s%(asctime)s.%(msecs)03d %(name)s %(filename)s:%(lineno)d] %(message)s"
DATE_FORMAT = "%m%d %H:%M:%S"

_state = {"progress": True, "log_file": None}
# Stage lines go to the terminal by print and into the log file through this logger, which does not
# propagate (so --log_to_console does not print them twice).
_stage_log = logging.getLogger("rallrec_jax.console")
_stage_log.propagate = False


class _TqdmHandler(logging.StreamHandler):
    """Writes records between progress bars instead of through them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _log_path(workdir: str | os.PathLike, name: str) -> pathlib.Path:
    folder = pathlib.Path(workdir) / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"{name}-{stamp}.log"
    n = 1
    while path.exists():  # two runs in one second (or one process per host): never share a file
        n += 1
        path = folder / f"{name}-{stamp}-{n}.log"
    return path


def setup(workdir: str | os.PathLike, name: str, *, log_to_console: bool = False,
          progress: bool = True) -> pathlib.Path:
    """Routes all logging: INFO and above into a new log file under `<workdir>/logs/`, WARNING and above (INFO
    too with `log_to_console`) to stderr; Python warnings join the log. Returns the log file's path."""
    path = _log_path(workdir, name)
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setLevel(logging.INFO)
    file_handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
    terminal = _TqdmHandler(sys.stderr)
    terminal.setLevel(logging.INFO if log_to_console else logging.WARNING)
    terminal.setFormatter(logging.Formatter(FORMAT if log_to_console else "%(levelname)s %(name)s: %(message)s",
                                            DATE_FORMAT))
    root = logging.getLogger()
    for handler in list(root.handlers):  # absl's stderr handler, or a basicConfig one
        root.removeHandler(handler)
    root.addHandler(file_handler)
    root.addHandler(terminal)
    root.setLevel(logging.INFO)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)  # orbax logs through absl: let its INFO reach the file
    _route_transformers()
    logging.captureWarnings(True)  # Python warnings: on the terminal (WARNING) and in the file
    for handler in list(_stage_log.handlers):
        _stage_log.removeHandler(handler)
        handler.close()
    _stage_log.addHandler(file_handler)
    _stage_log.setLevel(logging.INFO)
    _state.update(progress=bool(progress), log_file=path)
    logging.info("log file of %s: %s (command line: %s)", name, path, " ".join(sys.argv))
    return path


def _route_transformers() -> None:
    """transformers logs through its own stderr handler and does not propagate: send it to ours instead."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    hf_logging.set_verbosity_info()


def log_file() -> pathlib.Path | None:
    """This process's log file, once `setup()` ran."""
    return _state["log_file"]


def say(message: str) -> None:
    """A line for the person at the terminal (stdout, between any bars), also kept in the log file."""
    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()
    if _stage_log.handlers:
        _stage_log.info("%s", message, stacklevel=2)


def progress_enabled() -> bool:
    return bool(_state["progress"])


def progress(total: int, desc: str, *, initial: int = 0, unit: str = "it", enabled: bool = True) -> tqdm:
    """A tqdm bar on stderr for one long loop; off with `--noprogress` (or `enabled=False`), and on every process
    but the first of a multi-host run. Where stderr is not a terminal (CI, a log file) it redraws at most every
    30 s, so a long run does not flood the log."""
    main_process = True
    if "jax" in sys.modules:
        import jax

        main_process = jax.process_index() == 0
    interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    # tqdm's monitor thread also redraws a bar idle for `maxinterval` (10 s by default): held to 60 s off a terminal.
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=not (enabled and _state["progress"] and main_process),
                mininterval=0.1 if interactive else 30.0, maxinterval=10.0 if interactive else 60.0, leave=True)
