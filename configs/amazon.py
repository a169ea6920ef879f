"""Amazon 2018 Movies & TV as the official notebook (spec 1.4): category[2] of 3-level lists, items
with unknown category dropped, iterative core users 11..200 / items 10..200, top 5,000 items,
history >= 5, global temporal 8:1:1, label rating > 3."""
import ml_collections

from configs import base_data, base_generation, base_pipeline, base_reasoning, base_retrieval, base_scale


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """variant: "" (SmolLM2, CPU-friendly) or a paper-scale one from configs/base_scale.py."""
    config = ml_collections.ConfigDict()
    config.data = base_data.data_config("amazon")
    config.data.amazon_category = "Movies_and_TV"
    config.data.drop_items_without = "category"
    config.data.user_core_min, config.data.user_core_max = 11, 200
    config.data.item_core_min, config.data.item_core_max = 10, 200
    config.data.top_items = 5000
    config.eval_size = 10000
    base_generation.add_generation(config, sample_size=8192)
    config.reasoning = base_reasoning.reasoning_config()
    config.retrieval = base_retrieval.retrieval_config()
    base_pipeline.add_pipeline(config)
    config.pipeline.retrieval_ablation = True  # Fig. 8 rows (the paper shows MovieLens only)
    return base_scale.apply_variant(config, variant)
