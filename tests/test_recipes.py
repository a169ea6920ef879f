"""data/recipes.py on hand-made data sets small enough to work out on paper: the shared per-user sequences,
the temporal recipe (global time sort, history = earlier rows, 8:1:1-style split in time) and the
Book-Crossing recipe (each user's list shuffled by one seeded RNG, its last element the target), against
values computed by hand or by the official notebook's loop written out with Python's `random`."""
import random

import numpy as np

from rallrec_jax.data import recipes
from rallrec_jax.data.readers.raw import RawDataset


def _raw(name, users, items, ratings, stamps):
    titles = {i: {"title": f"item {i}"} for i in sorted(set(items))}
    return RawDataset(name, np.array(users), np.array(items), np.array(ratings, np.int32),
                      None if stamps is None else np.array(stamps, np.int64), titles,
                      {u: {"age": f"age of {u}"} for u in sorted(set(users))})


def _equal(got: dict, want: dict):
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], np.asarray(value), err_msg=key)


def test_user_sequences_group_rows_by_user_in_their_order():
    seq = recipes.user_sequences(np.array([1, 0, 1, 0, 0]), 2)
    _equal(vars(seq), {"rows": [1, 3, 4, 0, 2], "offsets": [0, 3, 5], "counts": [3, 2], "position": [0, 0, 1, 1, 2]})
    np.testing.assert_array_equal(seq.last_rows(np.array([1, 0])), [2, 4])
    rng = random.Random(3)
    first, second = [1, 3, 4], [0, 2]
    rng.shuffle(first)
    rng.shuffle(second)
    shuffled = recipes.user_sequences(np.array([1, 0, 1, 0, 0]), 2, shuffle=random.Random(3))
    np.testing.assert_array_equal(shuffled.rows, first + second)
    position = np.empty(5, np.int64)
    position[first + second] = [0, 1, 2, 0, 1]
    np.testing.assert_array_equal(shuffled.position, position)


def test_temporal_recipe_on_a_hand_computed_case():
    # file order: (user, item, rating, time); ids sort as numbers ("9" before "10")
    raw = _raw("movielens-tiny", ["10", "9", "9", "10", "9", "10"], ["10", "20", "10", "30", "30", "40"],
               [5, 2, 4, 1, 5, 4], [3, 1, 2, 1, 4, 5])
    d = recipes.preprocess_temporal(raw, positive_min_rating=5, min_history=1, split_fractions=(0.5, 0.25, 0.25))
    # Sorted by (time, user, item): rows 1, 3, 2, 0, 4, 5 -> user 9 = 0, user 10 = 1; items 10..40 = 0..3.
    assert d.user_ids.tolist() == ["9", "10"] and d.item_ids.tolist() == ["10", "20", "30", "40"]
    _equal({"offsets": d.seq_offsets, "item": d.seq_item, "rating": d.seq_rating, "time": d.seq_timestamp},
           {"offsets": [0, 3, 6], "item": [1, 0, 2, 2, 0, 3], "rating": [2, 4, 5, 1, 5, 4], "time": [1, 2, 4, 1, 3, 5]})
    # Samples: rows with >= 1 earlier row of their user, in time order, split 2 / 1 / 1.
    _equal(d.samples["train"], {"user": [0, 1], "position": [1, 1], "item": [0, 0], "rating": [4, 5],
                                "label": [0, 1], "timestamp": [2, 3]})
    _equal(d.samples["validation"], {"user": [0], "position": [2], "item": [2], "rating": [5], "label": [1],
                                     "timestamp": [4]})
    _equal(d.samples["test"], {"user": [1], "position": [2], "item": [3], "rating": [4], "label": [0],
                               "timestamp": [5]})
    assert [d.samples["train"][k].dtype for k in ("user", "position", "item", "rating", "label", "timestamp")] == [
        np.int32, np.int32, np.int32, np.int32, np.int8, np.int64]
    assert d.item_fields["title"].tolist() == ["item 10", "item 20", "item 30", "item 40"]
    assert d.user_fields["age"].tolist() == ["age of 9", "age of 10"] and d.has_timestamps


def test_bookcrossing_recipe_follows_the_notebook_loop():
    users = ["b", "a", "c", "b", "a", "c", "b", "a", "c", "a"]
    items = ["x", "y", "z", "y", "x", "x", "z", "z", "y", "w"]
    ratings = [0, 7, 5, 9, 3, 6, 4, 8, 10, 2]
    d = recipes.preprocess_bookcrossing(_raw("bookcrossing", users, items, ratings, None), item_selection_core=None,
                                        min_user_ratings=3, seed=42, test_fraction=1 / 3, valid_fraction=0.5)
    # The notebook: random.seed(42); per user in id order, shuffle the user's list; then shuffle the users.
    rng = random.Random(42)
    lists = {}
    for u in ("a", "b", "c"):
        lists[u] = [k for k in range(len(users)) if users[k] == u]
        rng.shuffle(lists[u])
    order = [0, 1, 2]
    rng.shuffle(order)
    item_index = {"w": 0, "x": 1, "y": 2, "z": 3}
    flat = lists["a"] + lists["b"] + lists["c"]
    _equal({"offsets": d.seq_offsets, "item": d.seq_item, "rating": d.seq_rating, "time": d.seq_timestamp},
           {"offsets": [0, 4, 7, 10], "item": [item_index[items[k]] for k in flat],
            "rating": [ratings[k] for k in flat], "time": [0] * 10})
    for split, user in zip(("train", "validation", "test"), order):  # 1 test user, then 1 of the 2 for validation
        target = lists["abc"[user]][-1]
        _equal(d.samples[split], {"user": [user], "position": [len(lists["abc"[user]]) - 1],
                                  "item": [item_index[items[target]]], "rating": [ratings[target]],
                                  "label": [int(ratings[target] >= 5)], "timestamp": [0]})
    assert not d.has_timestamps and d.user_ids.tolist() == ["a", "b", "c"]
