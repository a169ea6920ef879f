"""The spec's preprocessing on the real data sets: counts, labels, temporal splits, histories."""
import numpy as np
import pytest

from rallrec_jax.data import ctr, recipes
from rallrec_jax.data.readers import amazon, bookcrossing, movielens
from rallrec_jax.data.readers.raw import RawDataset


@pytest.fixture(scope="module")
def ml1m(shared_data):
    return recipes.preprocess_temporal(movielens.read_movielens_1m(shared_data / "ml-1m"))


def _all_samples(data, split):
    s = data.samples[split]
    return s["user"], s["position"], s["item"], s["timestamp"]


def test_movielens_1m_counts(ml1m):
    # users 1..2,999 of the official file: the spec's filter (history >= 5) yields 472,655 samples.
    stats = ml1m.statistics()
    assert stats["samples"] == 472_655
    n = 472_655
    assert ml1m.num_samples("train") == int(n * 0.8) == 378_124
    assert ml1m.num_samples("validation") == int(n * 0.1) == 47_265
    assert ml1m.num_samples("test") == n - 378_124 - 47_265
    # Label = rating > 3: 57.2% of all ratings are positive (the data README's figure); the
    # samples (ratings after the first five of each user) are 57.3% positive.
    labels = np.concatenate([ml1m.samples[s]["label"] for s in ctr.SPLITS])
    ratings = np.concatenate([ml1m.samples[s]["rating"] for s in ctr.SPLITS])
    np.testing.assert_array_equal(labels, ratings > 3)
    assert round(float((ml1m.seq_rating > 3).mean()), 3) == 0.572
    assert round(float(labels.mean()), 3) == 0.573
    assert ml1m.filter_log == [("read", 487_650), ("samples with history >= 5", 472_655)]
    assert stats["splits"]["train"]["history_length"]["min"] == 5


def test_movielens_split_is_temporal(ml1m):
    train_t = ml1m.samples["train"]["timestamp"]
    valid_t = ml1m.samples["validation"]["timestamp"]
    test_t = ml1m.samples["test"]["timestamp"]
    assert train_t.max() <= valid_t.min() and valid_t.max() <= test_t.min()
    # No test sample earlier than a train sample; within a split, time never goes back.
    for t in (train_t, valid_t, test_t):
        assert np.all(np.diff(t) >= 0)


def test_histories_hold_only_earlier_interactions(ml1m):
    rng = np.random.default_rng(0)
    for split in ctr.SPLITS:
        users, positions, items, stamps = _all_samples(ml1m, split)
        for i in rng.choice(len(users), 300, replace=False):
            hist = ml1m.history(split, i)
            assert len(hist["item"]) == positions[i] >= 5
            assert np.all(hist["timestamp"] <= stamps[i])
            assert np.all(np.diff(hist["timestamp"]) >= 0)
            # The target is the next element of the user's sequence.
            start = ml1m.seq_offsets[users[i]]
            assert ml1m.seq_item[start + positions[i]] == items[i]


def test_history_matches_a_direct_recomputation(shared_data, ml1m):
    """Rebuild a few samples straight from ratings.dat with a plain sort and compare."""
    rows = [line.split("::") for line in (shared_data / "ml-1m" / "ratings.dat").read_text().splitlines()]
    rows.sort(key=lambda r: (int(r[3]), int(r[0]), int(r[1])))
    seen: dict[str, list] = {}
    samples = []
    for u, i, r, t in rows:
        hist = seen.setdefault(u, [])
        if len(hist) >= 5:
            samples.append((u, i, int(r), list(hist)))
        hist.append((i, int(r)))
    assert len(samples) == 472_655
    for k in (0, 1, 378_123, 378_124, 472_654):
        split, idx = ("train", k) if k < 378_124 else ("validation", k - 378_124) if k < 378_124 + 47_265 \
            else ("test", k - 378_124 - 47_265)
        u, i, r, hist = samples[k]
        s = ml1m.samples[split]
        assert ml1m.user_ids[s["user"][idx]] == u and ml1m.item_ids[s["item"][idx]] == i
        got = ml1m.history(split, idx)
        assert [(ml1m.item_ids[a], int(b)) for a, b in zip(got["item"], got["rating"])] == hist


def test_training_interactions_never_reach_past_training(ml1m):
    users, items, _ = ml1m.training_interactions()
    last_train_time = ml1m.samples["train"]["timestamp"].max()
    offsets = ml1m.seq_offsets
    # Every interaction in the graph is at or before the last training sample's time.
    counts = np.bincount(users, minlength=ml1m.num_users)
    stamps = np.concatenate([ml1m.seq_timestamp[offsets[u]:offsets[u] + counts[u]] for u in range(ml1m.num_users)])
    assert stamps.max() <= last_train_time
    official_users, _, _ = ml1m.official_graph_interactions(10, True)
    assert len(official_users) > len(users)  # the official graph reaches into test time


def test_bookcrossing_rules(shared_data):
    raw = bookcrossing.read_bookcrossing(shared_data / "bookcrossing")
    bx = recipes.preprocess_bookcrossing(raw)
    stats = bx.statistics()
    train, valid, test = (bx.num_samples(s) for s in ctr.SPLITS)
    total = train + valid + test
    assert total == bx.num_users  # one sample per user
    assert test == round(total * 0.1) and valid == round((total - test) * 0.1)
    # Splits are disjoint in users; every user has >= 5 ratings, so histories have >= 4 items.
    users = [set(bx.samples[s]["user"].tolist()) for s in ctr.SPLITS]
    assert not (users[0] & users[1] or users[0] & users[2] or users[1] & users[2])
    assert stats["splits"]["train"]["history_length"]["min"] >= 4
    for s in ctr.SPLITS:
        np.testing.assert_array_equal(bx.samples[s]["label"], bx.samples[s]["rating"] >= 5)
    # Explicit ratings only in this copy: a higher positive rate than the paper's 0.462.
    assert stats["splits"]["train"]["positive_rate"] > 0.9
    # Deterministic: the seed fixes the shuffles.
    again = recipes.preprocess_bookcrossing(raw)
    np.testing.assert_array_equal(again.seq_item, bx.seq_item)
    np.testing.assert_array_equal(again.samples["test"]["user"], bx.samples["test"]["user"])
    # The target is never in its own history unless the user rated the book twice.
    hist = bx.history("test", 0)
    assert len(hist["item"]) == bx.samples["test"]["position"][0]


def test_amazon_rules(shared_data):
    folder = shared_data / "amazon-2018"
    raw = amazon.read_amazon(folder / "Magazine_Subscriptions.csv", folder / "meta_Magazine_Subscriptions.json.gz",
                              category_index=1, category_depth=None)
    az = recipes.preprocess_temporal(raw, drop_items_without="category", user_core=(5, None), item_core=(2, None))
    log = dict(az.filter_log)
    assert log["read"] == 89_689
    known = sum(1 for i in raw.item if raw.item_fields.get(i, {}).get("category", "unknown") != "unknown")
    assert log["drop items without metadata or with unknown category"] == known
    assert (az.item_fields["category"] != "unknown").all()
    # The core filter holds on what it kept.
    users, items = az.seq_item, np.repeat(np.arange(az.num_users), np.diff(az.seq_offsets))
    assert np.bincount(items).min() >= 5 and np.bincount(users).min() >= 2
    assert az.samples["train"]["timestamp"].max() <= az.samples["test"]["timestamp"].min()
    for s in ctr.SPLITS:
        np.testing.assert_array_equal(az.samples[s]["label"], az.samples[s]["rating"] > 3)


def test_top_items_and_caps():
    raw = RawDataset(
        "toy", user=np.array(list("aaabbbcccd")), item=np.array(list("xyzxyzxyxw")),
        rating=np.array([5, 4, 3, 2, 1, 5, 4, 3, 2, 1], np.int32), timestamp=np.arange(10, dtype=np.int64),
        item_fields={}, user_fields={})
    data = recipes.preprocess_temporal(raw, min_history=1, top_items=2)
    # x (4 ratings) and y (3) are the two most frequent items.
    assert set(data.item_ids.tolist()) == {"x", "y"}
    capped = recipes.iterative_core(raw.user, raw.item, 3, 3, 1, None)
    assert set(raw.user[capped].tolist()) == {"a", "b", "c"}


def test_save_load_roundtrip_and_corruption(tmp_path, shared_data):
    raw = bookcrossing.read_bookcrossing(shared_data / "bookcrossing")
    bx = recipes.preprocess_bookcrossing(raw)
    bx.save(tmp_path / "bx")
    back = ctr.CTRData.load(tmp_path / "bx")
    assert back.statistics() == bx.statistics()
    np.testing.assert_array_equal(back.item_fields["title"], bx.item_fields["title"])
    (tmp_path / "bx" / "ctr.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt prepared data set"):
        ctr.CTRData.load(tmp_path / "bx")
    with pytest.raises(FileNotFoundError, match="ctr.npz: missing"):
        ctr.CTRData.load(tmp_path / "nothing")
