"""Aligns the text embeddings to LightGCN's space (symmetric InfoNCE) and reports the alignment.

  python experiments/train_ssl.py --config configs/quickstart.py --workdir /abs/workdir
"""
from _retrieval_main import run

if __name__ == "__main__":
    run("ssl")
