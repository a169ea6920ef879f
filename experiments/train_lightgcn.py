"""Trains LightGCN on the training graph and reports Recall@20/NDCG@20 against popularity.

  python experiments/train_lightgcn.py --config configs/quickstart.py --workdir /abs/workdir
"""
from _main import print_json, run

from rallrec_jax.retrieval import stage

if __name__ == "__main__":
    run(lambda config, workdir: print_json(stage.run_step(config, workdir, "lightgcn")))
