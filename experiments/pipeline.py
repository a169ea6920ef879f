"""RALLRec+ end to end from one config: every stage, resumable, ending with the paper's tables.

  python experiments/pipeline.py --config configs/quickstart.py --workdir /abs/workdir
  python experiments/pipeline.py --config configs/movielens.py --workdir /abs/work --config.data.data_dir=/data/ml-1m
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout: configs/ importable

from rallrec_jax import cli  # noqa: E402

if __name__ == "__main__":
    cli.pipeline()
