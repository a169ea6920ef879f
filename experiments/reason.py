"""The reasoning stage: P_G from the general LLM, then K reasoning traces per test row (plain and knowledge-injected
prompts) and their P(Yes), saved under workdir/reasoning/ as they finish; a killed run resumes where it stopped.

  python experiments/reason.py --config configs/movielens.py --workdir /abs/workdir       --config.reasoning.max_new_tokens=96 --config.reasoning.num_rows=200
  python experiments/reason.py ... --config.evaluate.adapters=best     # the tuned M_G for P_G and the hint
  python experiments/reason.py ... --config.reasoning.llm_path=/models/DeepSeek-R1-Distill-Llama-8B
Then experiments/merge.py for the results table, the sweeps and the figures.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout: configs/ importable

from rallrec_jax import cli  # noqa: E402

if __name__ == "__main__":
    cli.reason()
