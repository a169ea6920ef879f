"""Book-Crossing as the paper (spec 1.3): label rating >= 5, one shuffled sample per user, 90/10."""
import ml_collections

from configs import base_data, base_generation


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.data = base_data.data_config("bookcrossing")
    config.data.positive_min_rating = 5
    config.eval_size = 0  # all test samples (873 in the paper)
    base_generation.add_generation(config, sample_size=256)
    return config
