"""P(Yes) of the general LLM over a split and its AUC / LogLoss / ACC (zero-shot or with tuned adapters).

  python experiments/evaluate.py --config configs/movielens.py --workdir /abs/workdir            # zero-shot
  python experiments/evaluate.py --config configs/movielens.py --workdir /abs/workdir --adapters=best
  python experiments/evaluate.py ... --config.evaluate.double_softmax=True   # the official tables' scoring
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/ importable

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from rallrec_jax import locking, settings  # noqa: E402
from rallrec_jax.generation import evaluate  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/*.py file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder (made absolute)")
_ADAPTERS = flags.DEFINE_string("adapters", None, "'' zero-shot, 'best' (the finetune run's), or a folder; "
                                "default config.evaluate.adapters")
_ROWS = flags.DEFINE_integer("rows", None, "first N rows of the split (default config.eval_size; 0 = all)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    with locking.workdir_lock(os.path.abspath(_WORKDIR.value)):
        result = evaluate.evaluate(_CONFIG.value, os.path.abspath(_WORKDIR.value), _ADAPTERS.value,
                                   num_rows=_ROWS.value)
    print(json.dumps({k: v for k, v in result.items() if k not in ("probabilities", "labels")}, indent=1))


if __name__ == "__main__":
    app.run(main, flags_parser=settings.parse_flags)
