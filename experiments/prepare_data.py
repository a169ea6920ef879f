"""Prepares a data set's CTR samples under --workdir and prints their statistics.

  python experiments/prepare_data.py --config configs/quickstart.py --workdir /abs/workdir
  python experiments/prepare_data.py --config configs/movielens.py --config.data.data_dir=/data/ml-1m ...
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout: configs/ importable

from rallrec_jax import cli  # noqa: E402

if __name__ == "__main__":
    cli.prepare_data()
