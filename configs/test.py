"""Tiny config for the tests: the Amazon 2018 Magazine Subscriptions files in ../shared/data.

That category is small (only 666 users have 5+ ratings), so the official Movies & TV filters would
leave nothing: users need 5+ ratings, items 2+, and the category is the first level below the root.
"""
import pathlib

import ml_collections

from configs import base_data, base_generation

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def get_config() -> ml_collections.ConfigDict:
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
    return config
