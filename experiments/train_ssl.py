"""Aligns the text embeddings to LightGCN's space (symmetric InfoNCE) and reports the alignment.

  python experiments/train_ssl.py --config configs/quickstart.py --workdir /abs/workdir
"""
from _main import print_json, run

from rallrec_jax.retrieval import stage

if __name__ == "__main__":
    run(lambda config, workdir: print_json(stage.run_step(config, workdir, "ssl")))
