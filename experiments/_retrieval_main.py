"""Shared absl main for the retrieval steps (train_lightgcn.py, train_ssl.py, retrieve.py)."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/ importable

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from rallrec_jax.retrieval import stage  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/*.py file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder (made absolute)")
flags.mark_flags_as_required(["config", "workdir"])


def run(step: str) -> None:
    def main(argv):
        del argv
        print(json.dumps(stage.run_step(_CONFIG.value, os.path.abspath(_WORKDIR.value), step), indent=1))

    app.run(main)
