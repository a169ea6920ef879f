"""Tiny config for the tests: the Amazon 2018 Magazine Subscriptions files in ../shared/data.

That category is small (only 666 users have 5+ ratings), so the official Movies & TV filters would
leave nothing: users need 5+ ratings, items 2+, and the category is the first level below the root.
"""
import os
import pathlib

import ml_collections

from configs import base_data, base_generation, base_pipeline, base_reasoning, base_retrieval

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """`test`: the small real data. `test:tiny` (or get_config("tiny")): also every LLM role played by the tiny
    random model at $RALLREC_TINY_LLM (tests/tiny_llm.py writes it) and the whole pipeline sized for seconds."""
    config = ml_collections.ConfigDict()
    config.data = base_data.data_config("amazon")
    config.data.data_dir = str(SHARED_DATA / "amazon-2018")
    config.data.amazon_category = "Magazine_Subscriptions"
    config.data.category_index = 1
    config.data.category_depth = 0
    config.data.drop_items_without = "category"
    config.data.user_core_min = 5
    config.data.item_core_min = 2
    config.data.tfds_max_history = 20
    config.eval_size = 100
    # Generation: small enough for tests (tests pass a tiny random model; the real one is SmolLM2).
    base_generation.add_generation(config, sample_size=64)
    config.finetune.k_history = 5
    config.finetune.max_prompt_tokens = 512
    config.finetune.effective_batch = 16
    config.finetune.micro_batch = 8
    config.finetune.epochs = 1
    config.finetune.eval_size = 16
    config.finetune.progress = False
    config.evaluate.k_history = 5
    config.evaluate.max_prompt_tokens = 512
    config.reasoning = base_reasoning.reasoning_config(num_rows=8, num_traces=3, max_new_tokens=8, prompts_per_batch=2, max_prompt_tokens=512, variance_window=4)
    config.retrieval = base_retrieval.retrieval_config()
    base_pipeline.add_pipeline(config)
    if variant == "tiny":
        _tiny(config)
    elif variant:
        raise ValueError(f"configs/test.py has no variant {variant!r} (only 'tiny')")
    return config


def _tiny(config: ml_collections.ConfigDict) -> None:
    llm = os.environ.get("RALLREC_TINY_LLM", "")
    if not llm:
        raise ValueError("configs/test.py:tiny needs RALLREC_TINY_LLM=<folder of a tiny model> (tests/tiny_llm.py)")
    config.data.build_tfds = False
    config.eval_size = 24
    config.model.path = config.retrieval.llm_path = config.reasoning.llm_path = llm
    r = config.retrieval
    r.description_max_new_tokens = 4
    r.description_batch_size = 512
    r.embed_batch_size = 64
    r.lightgcn.epochs = 2
    r.lightgcn.batch_size = 512
    r.ssl.epochs = 5
    r.k_history = 5
    config.finetune.sample_size = 32
    config.finetune.checkpoint_every = 1
    config.deepfm.max_epochs = 1
    config.reasoning.num_rows = 8
    config.pipeline.embedding_ablation = False
