"""MovieLens-1M as the paper (spec 1.2): label rating > 3, history >= 5, global temporal 8:1:1."""
import ml_collections

from configs import base_data, base_generation


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.data = base_data.data_config("movielens-1m")
    config.eval_size = 10000  # the official evaluation reads the first 10,000 test rows
    base_generation.add_generation(config, sample_size=8192)
    return config
