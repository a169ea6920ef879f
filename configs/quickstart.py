"""The embedded default: MovieLens-100K (offline from the recbole wheel), MovieLens preprocessing."""
import ml_collections

from configs import base_data, base_generation


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.data = base_data.data_config("movielens-100k")
    config.eval_size = 1000
    base_generation.add_generation(config, sample_size=8192)
    return config
