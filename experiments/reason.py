"""The reasoning stage: P_G from the general LLM, then K reasoning traces per test row (plain and knowledge-injected
prompts) and their P(Yes), saved under workdir/reasoning/ as they finish; a killed run resumes where it stopped.

  python experiments/reason.py --config configs/movielens.py --workdir /abs/workdir \
      --config.reasoning.max_new_tokens=96 --config.reasoning.num_rows=200
  python experiments/reason.py ... --config.evaluate.adapters=best     # the tuned M_G for P_G and the hint
  python experiments/reason.py ... --config.reasoning.llm_path=/models/DeepSeek-R1-Distill-Llama-8B
Then experiments/merge.py for the results table, the sweeps and the figures.
"""
import json
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
    summary = stage.reason(_CONFIG.value, os.path.abspath(_WORKDIR.value))
    print(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    app.run(main)
