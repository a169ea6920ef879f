"""Consistency-based merging of the reasoning traces with P_G (eq. 10), the results table (general, reasoning
w/o and w/ hint, merged = RALLRec+), the alpha / epsilon sweeps and the figures (Figs. 2, 3, 6, 7, 9).

  python experiments/merge.py --config configs/movielens.py --workdir /abs/workdir   # after experiments/reason.py
  python experiments/merge.py ... --config.reasoning.score=double_softmax            # the official scoring
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/ importable

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from rallrec_jax.reasoning import stage  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/*.py file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder (made absolute)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    result = stage.merge_results(_CONFIG.value, os.path.abspath(_WORKDIR.value))
    print(stage.results_table(result["rows"]))
    print(f"figures: {sorted(result['figures'].values())}")


if __name__ == "__main__":
    app.run(main)
