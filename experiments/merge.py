"""Consistency-based merging of the reasoning traces with P_G (eq. 10), the results table (general, reasoning
w/o and w/ hint, merged = RALLRec+), the alpha / epsilon sweeps and the figures (Figs. 2, 3, 6, 7, 9).

  python experiments/merge.py --config configs/movielens.py --workdir /abs/workdir   # after experiments/reason.py
  python experiments/merge.py ... --config.reasoning.score=double_softmax            # the official scoring
"""
from _main import run

from rallrec_jax.reasoning import stage


def show(config, workdir) -> None:
    result = stage.merge_results(config, workdir)
    print(stage.results_table(result["rows"]))
    print(f"figures: {sorted(result['figures'].values())}")


if __name__ == "__main__":
    run(show)
