"""Orders the evaluated test rows' histories (top-K retrieval, reranker).

  python experiments/retrieve.py --config configs/quickstart.py --workdir /abs/workdir
"""
from _main import print_json, run

from rallrec_jax.retrieval import stage

if __name__ == "__main__":
    run(lambda config, workdir: print_json(stage.run_step(config, workdir, "retrieve")))
