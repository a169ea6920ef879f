"""Shared data-config fields; each data set's config starts from these and sets its own values."""
import ml_collections


def data_config(name: str) -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.name = name
    d.data_dir = ""  # a folder with the official files; "" fetches (official source, cache, or wheel)
    # Label: rating >= positive_min_rating (4 is the spec's "rating > 3").
    d.positive_min_rating = 4
    # Temporal data sets (MovieLens, Amazon).
    d.min_history = 5
    d.user_core_min = 0  # iterative core filter bounds; 0 = off / no cap
    d.user_core_max = 0
    d.item_core_min = 0
    d.item_core_max = 0
    d.top_items = 0
    d.drop_items_without = ""
    d.split_fractions = (0.8, 0.1, 0.1)
    # Amazon 2018 files.
    d.amazon_category = "Movies_and_TV"
    d.ratings_file = ""
    d.meta_file = ""
    d.category_index = 2
    d.category_depth = 3  # 0 = any depth
    # Book-Crossing.
    d.item_selection_user_min = 11
    d.item_selection_user_max = 200
    d.item_selection_item_min = 10
    d.min_user_ratings = 5
    d.seed = 42
    d.test_fraction = 0.1
    d.valid_fraction = 0.1
    # TFDS array_record copy of the samples.
    d.build_tfds = True
    d.tfds_max_history = 100
    return d
