"""Orders the evaluated test rows' histories (top-K retrieval, reranker).

  python experiments/retrieve.py --config configs/quickstart.py --workdir /abs/workdir
"""
from _retrieval_main import run

if __name__ == "__main__":
    run("retrieve")
