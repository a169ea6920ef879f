"""The shared absl main of the stage binaries: `--config` (a configs/*.py file, overridable) and `--workdir`
(made absolute), then one library call holding the workdir's lock. Each binary is `run(fn)` with
fn(config, workdir)."""
import json
import os
import sys
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/ importable

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from rallrec_jax import locking, settings  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/*.py file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder (made absolute)")
flags.mark_flags_as_required(["config", "workdir"])


def print_json(summary) -> None:
    print(json.dumps(summary, indent=1, default=str))


def run(fn: Callable[..., None]) -> None:
    def main(argv):
        del argv
        logging.set_verbosity(logging.INFO)
        workdir = os.path.abspath(_WORKDIR.value)
        with locking.workdir_lock(workdir):  # one run per workdir
            fn(_CONFIG.value, workdir)

    app.run(main, flags_parser=settings.parse_flags)
