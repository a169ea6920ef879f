"""ID fields for the baselines: vocabularies from train only, unseen values counted, DeepFM learns a planted signal."""
import numpy as np

from configs import test as test_config
from rallrec_jax.data import features, prepare
from rallrec_jax.generation import deepfm


def test_fields_from_training_vocabulary(tmp_path):
    config = test_config.get_config().data
    config.build_tfds = False
    data = prepare.prepare_data(config, tmp_path)
    table = features.categorical_fields(data)
    assert table.names == ["user", "item", "item_category"]  # Amazon has no user profile
    train = table.fields["train"]
    assert (train > 0).all()  # every training value is in the vocabulary
    for f, card in enumerate(table.cardinalities):
        assert train[:, f].max() < card
    test = table.fields["test"]
    # A test user unseen in training maps to 0, and is counted.
    train_users = set(data.samples["train"]["user"].tolist())
    unseen = sum(u not in train_users for u in data.samples["test"]["user"].tolist())
    assert table.unseen["test"]["user"] == unseen == int((test[:, 0] == 0).sum())
    # Same value, same index, across splits.
    u0 = data.samples["test"]["user"][test[:, 0] > 0][0]
    row_train = np.flatnonzero(data.samples["train"]["user"] == u0)[0]
    assert train[row_train, 0] == test[test[:, 0] > 0][0, 0]
    np.testing.assert_array_equal(table.labels["test"], data.samples["test"]["label"])


def test_deepfm_on_real_fields_learns_a_planted_signal_on_held_out_rows(tmp_path):
    """The real samples' ID fields with labels drawn from a known per-category click probability: DeepFM fitted
    on 80% of the training rows ranks the other 20% (never seen in training) close to the true probabilities.
    (The real labels of this tiny set carry too little held-out signal to test learning on.)"""
    from sklearn.metrics import roc_auc_score

    config = test_config.get_config().data
    config.build_tfds = False
    data = prepare.prepare_data(config, tmp_path)
    table = features.categorical_fields(data)
    x, x_val = table.fields["train"], table.fields["validation"]
    rng = np.random.default_rng(0)
    logit = rng.normal(0, 1.5, table.cardinalities[2])  # one click logit per item_category index
    truth = lambda f: 1 / (1 + np.exp(-logit[f[:, 2]]))  # noqa: E731
    y = (rng.random(len(x)) < truth(x)).astype(np.int32)
    y_val = (rng.random(len(x_val)) < truth(x_val)).astype(np.int32)
    order = rng.permutation(len(y))
    fit, held = order[:len(y) * 4 // 5], order[len(y) * 4 // 5:]
    model, history = deepfm.train_deepfm(x[fit], y[fit], x_val, y_val, table.cardinalities,
                                         {"max_epochs": 3, "batch_size": 128})
    auc = roc_auc_score(y[held], deepfm.predict(model, x[held]))
    oracle = roc_auc_score(y[held], truth(x[held]))  # the best any model can rank these rows
    assert auc > 0.7 and auc > oracle - 0.1
    assert 0 <= history["best_epoch"] < 3


def test_recent_rating_field_buckets_the_ratings_the_prompt_shows(tmp_path):
    from rallrec_jax.data import histories

    config = test_config.get_config().data
    config.build_tfds = False
    data = prepare.prepare_data(config, tmp_path)
    plain = features.categorical_fields(data)
    table = features.categorical_fields(data, history_k=5)
    assert table.names == plain.names + ["recent_rating@5"]
    lo, hi = int(data.seq_rating.min()), int(data.seq_rating.max())
    assert table.cardinalities[-1] == 4 * (hi - lo) + 2
    for split in ("train", "test"):
        np.testing.assert_array_equal(table.fields[split][:, :-1], plain.fields[split])
        for row in range(0, data.num_samples(split), 97):
            shown = [e.rating for e in histories.recent_history(data, split, row, 5)]
            assert table.fields[split][row, -1] == round((np.mean(shown) - lo) * 4) + 1
