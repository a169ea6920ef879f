"""Fig. 8 (MovieLens in the paper): AUC / ACC of the tuned model under four inference-time retrievals (Recent,
Retri.-then-Mix, Mix-then-Retri., ReRank), for one or two tuning sets, each a pipeline run of its own:

  python experiments/pipeline.py --config configs/movielens.py --workdir /abs/work_rag
  python experiments/pipeline.py --config configs/movielens.py --workdir /abs/work_recent --config.pipeline.train_kind=""
  python experiments/figure8.py --workdirs=/abs/work_rag,/abs/work_recent --out=/abs/figure8.png
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout: configs/ importable

from rallrec_jax import cli  # noqa: E402

if __name__ == "__main__":
    cli.figure8()
