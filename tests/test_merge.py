"""merge.py: eq. 10 by hand, its limits, range, statistics and sweeps."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rallrec_jax import metrics
from rallrec_jax.reasoning import merge as cm


def _eq10(mr, vr, mg, vg, a, e):
    """Eq. 10 written out in float64 numpy."""
    return (a * mr / (vr + e) + mg / (vg + e)) / (a / (vr + e) + 1 / (vg + e))


def test_hand_computed_eq10():
    # sample 0: vr = 0.01, vg = 0: w_r = 0.1/0.011 = 9.0909, w_g = 1000 -> (9.0909*0.9 + 1000*0.6)/1009.0909
    mr = np.array([0.9, 0.2, 0.5])
    vr = np.array([0.01, 0.0, 0.25])
    mg = np.array([0.6, 0.4, 0.5])
    vg = np.array([0.0, 0.0, 0.0])
    got = np.asarray(cm.merge(mr, vr, mg, vg))
    want0 = (0.1 / 0.011 * 0.9 + 1000 * 0.6) / (0.1 / 0.011 + 1000)
    want1 = (100 * 0.2 + 1000 * 0.4) / 1100  # zero variance on both: weights 100 and 1000
    np.testing.assert_allclose(got, [want0, want1, 0.5], rtol=1e-6)
    np.testing.assert_allclose(got, _eq10(mr, vr, mg, vg, 0.1, 1e-3), rtol=1e-6)


@pytest.mark.parametrize("seed", range(20))
def test_random_against_formula_and_range(seed):
    rng = np.random.default_rng(seed)
    n, k, r = 257, int(rng.integers(1, 9)), int(rng.integers(1, 4))
    traces = rng.random((n, k)) ** rng.uniform(0.2, 5)
    general = rng.random((n, r))
    alpha = float(rng.choice([0.0, 1e-3, 0.1, 0.5, 3.0, 1e4]))
    eps = float(rng.choice([1e-6, 1e-3, 1e-1]))
    got = np.asarray(cm.merge_runs(traces, general, alpha, eps))
    want = _eq10(traces.mean(1), traces.var(1), general[:, 0], general.var(1), alpha, eps)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
    assert got.min() >= 0 and got.max() <= 1
    lo = np.minimum(traces.mean(1), general[:, 0])
    hi = np.maximum(traces.mean(1), general[:, 0])
    assert np.all(got >= lo.astype(np.float32)) and np.all(got <= hi.astype(np.float32))


def _official_fused_prediction(model_a_preds, model_b_preds, w_A=0.1, epsilon=1e-3, w_B=1., tau_A=1.0, tau_B=1.):
    """The per-sample loop body of the official inference/merge.py (spec 3.5), transcribed."""
    mu_a = np.mean(model_a_preds)
    var_a = np.var(model_a_preds)
    mu_b = model_b_preds[0]
    var_b = np.var(model_b_preds)
    weight_a = w_A / (var_a / tau_A + epsilon)
    weight_b = w_B / (var_b / tau_B + epsilon)
    return (weight_a * mu_a + weight_b * mu_b) / (weight_a + weight_b)


@pytest.mark.parametrize("alpha, eps", [(0.1, 1e-3), (0.3, 1e-5), (0.5, 1e-2)])
def test_equals_official_loop(alpha, eps):
    rng = np.random.default_rng(11)
    preds = rng.random((5, 300))  # official layout: [runs, samples]
    preds_llm = np.clip(rng.random((1, 300)) + rng.normal(0, 0.01, (3, 300)), 0, 1)  # 3 general runs
    want = [_official_fused_prediction(preds[:, i], preds_llm[:, i], w_A=alpha, epsilon=eps) for i in range(300)]
    got = cm.merge_runs(preds.T, preds_llm.T, alpha, eps, general_mean="first")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_never_leaves_unit_interval_at_the_edges():
    mr = jnp.array([1.0, 0.0, 1.0, 0.0])
    mg = jnp.array([1.0, 0.0, 0.0, 1.0])
    z = jnp.zeros(4)
    for a in (0.0, 0.1, 1.0, 1e8):
        for e in (1e-9, 1e-3, 10.0):
            p = np.asarray(cm.merge(mr, z, mg, z, a, e))
            assert p.min() >= 0 and p.max() <= 1
    np.testing.assert_array_equal(np.asarray(cm.merge(mr, z, mg, z, 0.3, 1e-3))[:2], [1.0, 0.0])


def test_limits_alpha_zero_and_huge():
    rng = np.random.default_rng(1)
    mr, mg = rng.random(100), rng.random(100)
    vr, vg = rng.random(100) * 0.25, rng.random(100) * 1e-3
    np.testing.assert_allclose(np.asarray(cm.merge(mr, vr, mg, vg, 0.0)), mg, rtol=2e-7)  # w_g*m/w_g rounding
    np.testing.assert_allclose(np.asarray(cm.merge(mr, vr, mg, vg, 1e9)), mr, atol=1e-5)
    # monotone move from P_G towards mean_R as alpha grows
    d = [np.abs(np.asarray(cm.merge(mr, vr, mg, vg, a)) - mr).mean() for a in (0.01, 0.1, 1, 10)]
    assert d == sorted(d, reverse=True)


def test_trace_stats_population_variance_and_general_mean():
    x = np.array([[0.2, 0.4, 0.9], [0.5, 0.5, 0.5]])
    m, v = cm.trace_stats(x)
    np.testing.assert_allclose(m, x.mean(1), rtol=1e-6)
    np.testing.assert_allclose(v, np.var(x, axis=1), rtol=1e-6)  # ddof = 0
    assert not np.allclose(v[0], np.var(x[0], ddof=1))
    mg, vg = cm.general_stats(x, "first")
    np.testing.assert_allclose(mg, x[:, 0])
    np.testing.assert_allclose(vg, np.var(x, axis=1), rtol=1e-6)
    mg2, _ = cm.general_stats(x, "mean")
    np.testing.assert_allclose(mg2, x.mean(1), rtol=1e-6)
    m1, v1 = cm.general_stats(np.array([0.3, 0.7]))  # one deterministic run: [N]
    np.testing.assert_allclose(m1, [0.3, 0.7], rtol=1e-6)
    np.testing.assert_array_equal(v1, [0.0, 0.0])


def test_jit_compatible():
    rng = np.random.default_rng(3)
    tr, ge = rng.random((50, 5)), rng.random((50, 2))
    f = jax.jit(lambda a, b: cm.merge_runs(a, b, 0.2, 1e-4))
    np.testing.assert_allclose(f(tr, ge), cm.merge_runs(tr, ge, 0.2, 1e-4), rtol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: cm.trace_stats(np.array([[0.1, np.nan]])), "NaN/inf .*sample 0, run 1"),
        (lambda: cm.trace_stats(np.array([0.1, 0.2])), r"\[N, K\]"),
        (lambda: cm.trace_stats(np.array([[0.1, 1.2]])), r"\[0, 1\]"),
        (lambda: cm.general_stats(np.ones((2, 2)) / 2, "median"), "general_mean"),
        (lambda: cm.merge_runs(np.ones((3, 2)) / 2, np.ones(4) / 2), "3 samples"),
        (lambda: cm.merge([0.5], [0.1], [0.5], [0.0], alpha=-1.0), "alpha"),
        (lambda: cm.merge([0.5], [0.1], [0.5], [0.0], epsilon=0.0), "epsilon"),
        (lambda: cm.merge([0.5], [-0.1], [0.5], [0.0]), "var_r"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_sweeps_use_metrics():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    traces = np.clip(0.5 + 0.2 * (2 * y[:, None] - 1) + rng.normal(0, 0.3, (n, 5)), 0, 1)
    general = np.clip(0.5 + 0.05 * (2 * y - 1) + rng.normal(0, 0.1, n), 0, 1)
    mr, vr = cm.trace_stats(traces)
    mg, vg = cm.general_stats(general)
    rows = cm.sweep_alpha(y, mr, vr, mg, vg)
    assert [r["alpha"] for r in rows] == list(cm.PAPER_ALPHAS)
    for r in rows:
        p = _eq10(np.asarray(mr), np.asarray(vr), np.asarray(mg), np.asarray(vg), r["alpha"], r["epsilon"])
        want = metrics.ctr_metrics(y, p)
        for k in ("auc", "logloss", "acc"):
            assert r[k] == pytest.approx(want[k], abs=2e-5), (r, k)
    rows_e = cm.sweep_epsilon(y, mr, vr, mg, vg)
    assert [r["epsilon"] for r in rows_e] == list(cm.PAPER_EPSILONS)
    assert all(r["alpha"] == 0.1 for r in rows_e)
    # here the traces carry more signal than P_G, so more weight on them must raise AUC
    aucs = [r["auc"] for r in rows]
    assert aucs[-1] > aucs[0]
