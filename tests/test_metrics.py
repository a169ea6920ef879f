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
