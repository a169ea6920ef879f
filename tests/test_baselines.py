"""The honest baselines (generation/baselines.py) on real data (configs/test.py, Amazon magazines): the history
mean is the mean of the ratings the prompt shows, the item statistics are the training interactions', the
logistic regression is sklearn's, and nothing of validation or test reaches a fitted parameter."""
import copy

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import configs.test
from rallrec_jax.data import histories, prepare
from rallrec_jax.generation import baselines


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    config = configs.test.get_config()
    config.data.build_tfds = False
    return prepare.prepare_data(config.data, tmp_path_factory.mktemp("work"))


def test_history_mean_is_the_mean_of_the_ratings_the_prompt_shows(data):
    rows = np.arange(0, data.num_samples("test"), 7)
    got = baselines.history_mean_rating(data, "test", rows, 5, fallback=-1.0)
    want = [np.mean([e.rating for e in histories.recent_history(data, "test", int(r), 5)]) for r in rows]
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_item_statistics_and_leave_one_out(data):
    fit = baselines.fit_baselines(data, 5, item_prior=4.0)
    users, items, ratings = data.training_interactions()
    sums, counts = {}, {}
    for i, r in zip(items.tolist(), ratings.tolist()):
        sums[i] = sums.get(i, 0) + r
        counts[i] = counts.get(i, 0) + 1
    for i in range(data.num_items):
        assert fit.item_sum[i] == sums.get(i, 0) and fit.item_count[i] == counts.get(i, 0)
    assert fit.global_mean == pytest.approx(ratings.mean())
    # A test row's item feature is the smoothed training mean; predictions are monotone in it.
    test_items = data.samples["test"]["item"]
    smoothed = (fit.item_sum[test_items] + 4.0 * fit.global_mean) / (fit.item_count[test_items] + 4.0)
    probs = baselines.predict_baselines(fit, data, "test", np.arange(len(test_items)))["Item mean rating"]
    assert np.all(np.diff(probs[np.argsort(smoothed)]) >= -1e-12)


def test_logistic_regression_equals_sklearn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 2)) * [1.0, 5.0] + [3.0, -1.0]
    y = (rng.random(3000) < 1 / (1 + np.exp(-(0.5 * x[:, 0] - 0.2 * x[:, 1])))).astype(int)
    ours = baselines.fit_logistic(x, y, l2=0.0)
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit(x, y)
    np.testing.assert_allclose(ours.predict(x), ref.predict_proba(x)[:, 1], atol=1e-7)
    np.testing.assert_allclose(ours.coef / ours.scale, ref.coef_[0], rtol=1e-5)


def _perturbed(data, splits, rng):
    """A copy whose rows of `splits` have other ratings and labels, in the samples and in the sequences."""
    other = copy.deepcopy(data)
    for split in splits:
        s = other.samples[split]
        new = rng.integers(1, 6, len(s["rating"])).astype(s["rating"].dtype)
        s["rating"][:] = new
        s["label"][:] = (new >= 4).astype(s["label"].dtype)
        other.seq_rating[other.seq_offsets[s["user"]] + s["position"]] = new
    return other


def test_baselines_see_training_rows_only(data):
    before = baselines.fit_baselines(data, 5).parameters()
    rng = np.random.default_rng(1)
    changed = _perturbed(data, ("validation", "test"), rng)
    assert (changed.samples["test"]["label"] != data.samples["test"]["label"]).any()
    after = baselines.fit_baselines(changed, 5).parameters()
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    # The check can fail: other training labels do change the fit.
    moved = baselines.fit_baselines(_perturbed(data, ("train",), rng), 5).parameters()
    assert any(not np.array_equal(moved[k], before[k]) for k in before)


def test_bad_settings_are_named(data):
    with pytest.raises(ValueError, match="item_prior"):
        baselines.fit_baselines(data, 5, item_prior=0.0)
    with pytest.raises(ValueError, match="k_history"):
        baselines.history_mean_rating(data, "test", [0], 0, 3.0)
