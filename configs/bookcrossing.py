"""Book-Crossing as the paper (spec 1.3): label rating >= 5, one shuffled sample per user, 90/10."""
import ml_collections

from configs import base_data, base_generation, base_pipeline, base_reasoning, base_retrieval, base_scale


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """variant: "" (SmolLM2, CPU-friendly) or a paper-scale one from configs/base_scale.py."""
    config = ml_collections.ConfigDict()
    config.data = base_data.data_config("bookcrossing")
    config.data.positive_min_rating = 5
    config.eval_size = 0  # all test samples (873 in the paper)
    base_generation.add_generation(config, sample_size=256)
    config.reasoning = base_reasoning.reasoning_config(variance_window=500)
    config.retrieval = base_retrieval.retrieval_config()
    base_pipeline.add_pipeline(config)
    config.pipeline.retrieval_ablation = True  # Fig. 8 rows (the paper shows MovieLens only)
    return base_scale.apply_variant(config, variant)
