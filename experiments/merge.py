"""Consistency-based merging of the reasoning traces with P_G (eq. 10), the results table (general, reasoning
w/o and w/ hint, merged = RALLRec+), the alpha / epsilon sweeps and the figures (Figs. 2, 3, 6, 7, 9).

  python experiments/merge.py --config configs/movielens.py --workdir /abs/workdir   # after experiments/reason.py
  python experiments/merge.py ... --config.reasoning.score=double_softmax            # the official scoring
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout: configs/ importable

from rallrec_jax import cli  # noqa: E402

if __name__ == "__main__":
    cli.merge()
