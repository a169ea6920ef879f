"""P(Yes) of the general LLM over a split and its AUC / LogLoss / ACC (zero-shot or with tuned adapters).

  python experiments/evaluate.py --config configs/movielens.py --workdir /abs/workdir            # zero-shot
  python experiments/evaluate.py --config configs/movielens.py --workdir /abs/workdir --adapters=best
  python experiments/evaluate.py ... --config.evaluate.double_softmax=True   # the official tables' scoring
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout: configs/ importable

from rallrec_jax import cli  # noqa: E402

if __name__ == "__main__":
    cli.evaluate()
