"""RALLRec+ end to end from one config: every stage, resumable, ending with the paper's tables.

  python experiments/pipeline.py --config configs/quickstart.py --workdir /abs/workdir
  python experiments/pipeline.py --config configs/movielens.py --workdir /abs/work --config.data.data_dir=/data/ml-1m
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/ importable

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from rallrec_jax import pipeline, settings  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/*.py file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder (made absolute)")
_STAGES = flags.DEFINE_list("stages", None, f"subset of {','.join(pipeline.STAGES)} (default: all)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    pipeline.run_pipeline(_CONFIG.value, os.path.abspath(_WORKDIR.value), _STAGES.value,
                          progress=lambda msg: print(msg, flush=True))


if __name__ == "__main__":
    app.run(main, flags_parser=settings.parse_flags)
