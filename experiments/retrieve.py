"""Orders the evaluated test rows' histories (top-K retrieval, reranker).

  python experiments/retrieve.py --config configs/quickstart.py --workdir /abs/workdir
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout: configs/ importable

from rallrec_jax import cli  # noqa: E402

if __name__ == "__main__":
    cli.retrieve()
