"""LoRA instruction tuning of the general LLM on a prepared data set; resumes from the latest checkpoint.

  python experiments/finetune.py --config configs/movielens.py --workdir /abs/workdir
  python experiments/finetune.py --config configs/quickstart.py --workdir /abs/w --config.finetune.max_steps=10
Multi-host: pass --coordinator=host:port --num_processes=N --process_id=i (or --distributed=auto) on every host.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout: configs/ importable

from rallrec_jax import cli  # noqa: E402

if __name__ == "__main__":
    cli.finetune()
