"""metrics.py against scikit-learn: random, tied, constant and extreme inputs, and the errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss as sk_log_loss, roc_auc_score

from rallrec_jax import metrics


def _sk(y, p):
    return {"auc": roc_auc_score(y, p), "logloss": sk_log_loss(y, p), "acc": accuracy_score(y, p > 0.5)}


@pytest.mark.parametrize("seed", range(5))
def test_random_inputs_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 3000))
    y = rng.integers(0, 2, n)
    y[0], y[-1] = 0, 1
    p = rng.random(n)
    got, want = metrics.ctr_metrics(y, p), _sk(y, p)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k


@pytest.mark.parametrize("levels", [2, 3, 7, 50])
def test_many_ties_equal_sklearn(levels):
    """Scores drawn from a few levels: every rank is a tie; midranks must match sklearn."""
    rng = np.random.default_rng(levels)
    y = rng.integers(0, 2, 5000)
    p = rng.integers(0, levels, 5000) / (levels - 1) * 0.9 + 0.05
    got, want = metrics.ctr_metrics(y, p), _sk(y, p)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k


def test_ties_differ_from_tie_blind_rank():
    """A hand case: pos {0.5, 0.9}, neg {0.5, 0.1}: pairs (0.5,0.5) tie -> 0.5, others win -> AUC 3.5/4."""
    y = np.array([1, 1, 0, 0])
    p = np.array([0.5, 0.9, 0.5, 0.1])
    assert metrics.roc_auc(y, p) == pytest.approx(0.875, abs=1e-15)
    assert roc_auc_score(y, p) == pytest.approx(0.875)


def test_all_equal_scores_give_half():
    y = np.array([0, 1, 1, 0, 1])
    p = np.full(5, 0.3)
    assert metrics.roc_auc(y, p) == 0.5 == roc_auc_score(y, p)
    assert metrics.accuracy(y, p) == accuracy_score(y, p > 0.5) == 0.4


def test_extreme_probabilities_clip_like_sklearn():
    y = np.array([1, 0, 1, 0, 1, 0])
    p = np.array([0.0, 1.0, 1.0, 0.0, 1e-300, 1 - 1e-17])
    assert metrics.log_loss(y, p) == pytest.approx(sk_log_loss(y, p), rel=1e-12)
    p32 = p.astype(np.float32)  # sklearn keeps float32 and clips with float32 eps
    assert metrics.log_loss(y, p32, precision="float32") == pytest.approx(sk_log_loss(y, p32), rel=1e-6)
    # the two precisions really differ there: the float64 loss of a p = 0 positive is 36.04, float32 15.94
    assert metrics.log_loss([1, 0], [0.0, 0.0]) == pytest.approx(-np.log(np.finfo(np.float64).eps) / 2)
    assert metrics.log_loss([1, 0], [0.0, 0.0], precision="float32") == pytest.approx(
        -np.log(np.finfo(np.float32).eps) / 2, rel=1e-6)


def test_float32_path_close_to_sklearn_on_large_input():
    rng = np.random.default_rng(7)
    n = 200_000
    y = rng.integers(0, 2, n)
    p = np.clip(rng.normal(0.5 + 0.1 * (2 * y - 1), 0.2), 0, 1).astype(np.float32)
    got = metrics.ctr_metrics(y, p, precision="float32")
    want = _sk(y, p)
    assert abs(got["auc"] - want["auc"]) < 1e-6
    assert abs(got["logloss"] - want["logloss"]) < 1e-5
    assert got["acc"] == pytest.approx(want["acc"], abs=1e-7)


def test_accuracy_threshold_is_strict():
    # p == 0.5 predicts negative, as `p > 0.5` in the official code
    assert metrics.accuracy([0, 1], [0.5, 0.5]) == 0.5
    assert metrics.accuracy([0, 1], [0.5, 0.5000001]) == 1.0


def test_kernels_jit_and_nan_on_single_class():
    y = jnp.array([1, 1, 1])
    p = jnp.array([0.2, 0.3, 0.9])
    assert np.isnan(jax.jit(metrics.binary_auc)(y, p))
    # jit-compatible inside another jitted function, labels as a traced array
    f = jax.jit(lambda a, b: (metrics.binary_auc(a, b), metrics.binary_log_loss(a, b), metrics.binary_accuracy(a, b)))
    yy = jnp.array([0, 1, 0, 1])
    pp = jnp.array([0.1, 0.8, 0.6, 0.4], dtype=jnp.float32)
    auc, ll, acc = f(yy, pp)
    assert float(auc) == pytest.approx(roc_auc_score(yy, pp), abs=1e-7)
    assert float(ll) == pytest.approx(sk_log_loss(np.asarray(yy), np.asarray(pp)), rel=1e-6)
    assert float(acc) == 0.5


@pytest.mark.parametrize(
    "labels, probs, fn, match",
    [
        ([0, 1, 1], [0.1, 0.2], metrics.ctr_metrics, "differ in length"),
        ([1, 1, 1], [0.1, 0.2, 0.3], metrics.roc_auc, "Only one class"),
        ([0, 0], [0.1, 0.2], metrics.ctr_metrics, "Only one class"),
        ([0, 1, 1], [0.1, np.nan, 0.3], metrics.ctr_metrics, "NaN/inf .*index 1"),
        ([0, 1, 1], [0.1, np.inf, 0.3], metrics.roc_auc, "NaN/inf"),
        ([0, 1, 2], [0.1, 0.2, 0.3], metrics.ctr_metrics, "0/1"),
        ([0, 1], [0.1, 1.2], metrics.log_loss, r"\[0, 1\]"),
        ([], [], metrics.ctr_metrics, "empty"),
        (["a", "b"], [0.1, 0.2], metrics.ctr_metrics, "numeric"),
    ],
)
def test_bad_input_raises(labels, probs, fn, match):
    with pytest.raises(ValueError, match=match):
        fn(labels, probs)


def test_bad_precision_name():
    with pytest.raises(ValueError, match="precision"):
        metrics.log_loss([0, 1], [0.2, 0.8], precision="bf16")


def test_x64_context_restored():
    metrics.ctr_metrics([0, 1], [0.2, 0.8])
    assert jnp.asarray([1.0]).dtype == jnp.float32


# ----------------------------------------------------------------------------- GAUC and user-level bootstrap
import math  # noqa: E402


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_gauc_equals_a_hand_computation():
    """User a: pos {0.9, 0.5}, neg {0.5}: pairs 1 + 0.5 -> 0.75 over 3 rows; user b: pos 0.2 below neg 0.8 -> 0
    over 2 rows; user c has only positives and is left out. GAUC = (3 * 0.75 + 2 * 0) / 5 = 0.45."""
    users = np.array(["a", "b", "a", "c", "b", "a", "c"])
    y = np.array([1, 0, 0, 1, 1, 1, 1])
    s = np.array([0.9, 0.8, 0.5, 0.3, 0.2, 0.5, 0.7])
    got = metrics.gauc(y, s, users)
    assert got == {"gauc": pytest.approx(0.45, abs=1e-15), "users": 2, "rows": 5}
    assert np.isnan(metrics.gauc([1, 0], [0.2, 0.3], ["a", "b"])["gauc"])


def test_gauc_equals_sklearn_per_user_average():
    rng = np.random.default_rng(3)
    users = rng.integers(0, 40, 900)
    y = rng.integers(0, 2, 900)
    s = rng.integers(0, 6, 900) / 5.0  # many ties inside each user
    want_num = want_den = 0.0
    for u in np.unique(users):
        m = users == u
        if 0 < y[m].sum() < m.sum():
            want_num += m.sum() * roc_auc_score(y[m], s[m])
            want_den += m.sum()
    assert metrics.gauc(y, s, users)["gauc"] == pytest.approx(want_num / want_den, abs=1e-12)


def test_weighted_auc_equals_sklearn_sample_weight():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 400)
    s = rng.integers(0, 30, 400) / 29.0
    w = rng.integers(0, 4, (5, 400)).astype(float)
    got = metrics.weighted_auc(y, s, w)
    for r in range(5):
        assert got[r] == pytest.approx(roc_auc_score(y, s, sample_weight=w[r]), abs=1e-12)
    assert metrics.weighted_auc(y, s, np.ones(400))[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def _clustered_draw(rng, users=120, d=(1.0,), sigma_user=1.0):
    """Rows of `users` users (1 + Poisson(12) rows each, like rate ~ Beta(2, 2)); score = user effect + d * label
    + noise. The pooled population AUC is Phi(d / sqrt(2 (1 + sigma_user^2))) (pairs from distinct users)."""
    n = 1 + rng.poisson(12, users)
    uid = np.repeat(np.arange(users), n)
    y = (rng.random(uid.shape[0]) < rng.beta(2, 2, users)[uid]).astype(int)
    effect = rng.normal(0, sigma_user, users)[uid]
    scores = [1 / (1 + np.exp(-(effect + dk * y + rng.normal(0, 1, uid.shape[0])))) for dk in d]
    truth = [_phi(dk / np.sqrt(2 * (1 + sigma_user ** 2))) for dk in d]
    return y, uid, scores, truth


def test_user_bootstrap_interval_covers_a_known_auc_about_95_percent():
    rng = np.random.default_rng(0)
    hits, row_hits = [], []
    for draw in range(200):
        y, uid, (p,), (truth,) = _clustered_draw(rng)
        ci = metrics.bootstrap_metrics(y, p, uid, resamples=400, seed=draw)["auc"]
        assert ci["lo"] <= ci["value"] <= ci["hi"]
        hits.append(ci["lo"] <= truth <= ci["hi"])
        rows = metrics.bootstrap_metrics(y, p, np.arange(len(y)), resamples=400, seed=draw)["auc"]
        row_hits.append(rows["lo"] <= truth <= rows["hi"])
    assert 0.90 <= np.mean(hits) <= 0.99, np.mean(hits)
    # Resampling rows as if they were independent ignores the users' shared effect: too narrow (0.85 here).
    assert np.mean(row_hits) < 0.90, np.mean(row_hits)


def test_paired_interval_covers_a_known_auc_difference_about_95_percent():
    rng = np.random.default_rng(1)
    hits, widths_paired, widths_apart = [], [], []
    for draw in range(200):
        y, uid, (a, b), (ta, tb) = _clustered_draw(rng, d=(1.2, 0.8))
        pair = metrics.paired_auc_difference(y, a, b, uid, resamples=400, seed=draw)
        assert pair["delta"] == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b), abs=1e-12)
        hits.append(pair["lo"] <= ta - tb <= pair["hi"])
        widths_paired.append(pair["hi"] - pair["lo"])
        if draw < 40:
            ia = metrics.bootstrap_metrics(y, a, uid, resamples=400, seed=draw)["auc"]
            ib = metrics.bootstrap_metrics(y, b, uid, resamples=400, seed=draw)["auc"]
            widths_apart.append(np.hypot(ia["hi"] - ia["lo"], ib["hi"] - ib["lo"]))
    assert 0.90 <= np.mean(hits) <= 0.99, np.mean(hits)
    # Pairing pays: the shared user effect cancels, so the paired interval is narrower than the two apart.
    assert np.mean(widths_paired[:40]) < 0.8 * np.mean(widths_apart)


def test_bootstrap_is_seeded_and_pairs_itself_to_zero():
    rng = np.random.default_rng(5)
    y, uid, (p,), _ = _clustered_draw(rng, users=30)
    one = metrics.bootstrap_metrics(y, p, uid, resamples=200, seed=3)
    assert one == metrics.bootstrap_metrics(y, p, uid, resamples=200, seed=3)
    assert one != metrics.bootstrap_metrics(y, p, uid, resamples=200, seed=4)
    assert one["auc"]["value"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert one["logloss"]["value"] == pytest.approx(sk_log_loss(y, p), abs=1e-12)
    assert one["users"] == 30 and one["rows"] == len(y)
    for k in ("auc", "gauc", "logloss", "acc"):
        assert one[k]["lo"] <= one[k]["value"] <= one[k]["hi"], k
    same = metrics.paired_auc_difference(y, p, p, uid, resamples=200)
    assert same["delta"] == same["lo"] == same["hi"] == 0.0
    with pytest.raises(ValueError, match="users must be"):
        metrics.bootstrap_metrics(y, p, uid[:-1])
