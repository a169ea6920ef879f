"""Prepares a data set's CTR samples under --workdir and prints their statistics.

  python experiments/prepare_data.py --config configs/quickstart.py --workdir /abs/workdir
  python experiments/prepare_data.py --config configs/movielens.py --config.data.data_dir=/data/ml-1m ...
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/ importable

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from rallrec_jax import locking, settings  # noqa: E402
from rallrec_jax.data import ctr, prepare  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/*.py file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder (made absolute)")
_FORCE = flags.DEFINE_bool("force", False, "prepare again even if the outputs are up to date")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    with locking.workdir_lock(os.path.abspath(_WORKDIR.value)):
        data = prepare.prepare_data(_CONFIG.value.data, os.path.abspath(_WORKDIR.value), force=_FORCE.value)
    print(ctr.format_statistics(data.statistics()))
    print(f"prepared: {prepare.prepared_dir(_CONFIG.value.data, os.path.abspath(_WORKDIR.value))}")


if __name__ == "__main__":
    app.run(main, flags_parser=settings.parse_flags)
