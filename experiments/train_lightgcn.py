"""Trains LightGCN on the training graph and reports Recall@20/NDCG@20 against popularity.

  python experiments/train_lightgcn.py --config configs/quickstart.py --workdir /abs/workdir
"""
from _retrieval_main import run

if __name__ == "__main__":
    run("lightgcn")
