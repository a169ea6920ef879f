"""analysis.py: numbers on hand-made inputs, figures written, JSON round trip."""
import json
import os

import numpy as np
import pytest

from rallrec_jax.reasoning import analysis


def test_length_groups_hand_made():
    # 10 responses (5 samples x 2 runs); lengths 1..10; the short ones correct, the long ones wrong
    labels = np.array([1, 0, 1, 0, 1])
    lengths = np.arange(1, 11).reshape(5, 2)
    preds = np.where(lengths <= 4, np.where(labels[:, None] == 1, 0.9, 0.1),
                     np.where(labels[:, None] == 1, 0.2, 0.8))
    preds[3, 0] = 0.9  # length 7, label 0: wrong anyway
    preds[4, 1] = 0.7  # length 10, label 1: right
    out = analysis.accuracy_by_length(labels, preds, lengths, num_groups=5)
    assert [g["n"] for g in out["groups"]] == [2] * 5
    assert [(g["min_length"], g["max_length"]) for g in out["groups"]] == [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10)]
    assert [g["accuracy"] for g in out["groups"]] == [1.0, 1.0, 0.0, 0.0, 0.5]
    assert out["groups"][0]["mean_length"] == 1.5


def test_length_groups_uneven_sizes_and_ties():
    labels = np.zeros(7, int)
    lengths = np.array([5, 5, 5, 1, 1, 9, 9])  # ties keep sample order (stable sort)
    preds = np.array([0.1, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1])
    out = analysis.accuracy_by_length(labels, preds, lengths, num_groups=3)
    assert [g["n"] for g in out["groups"]] == [3, 2, 2]  # np.array_split: earlier groups larger
    # sorted order: idx 3,4 (len 1), 0,1,2 (len 5), 5,6 (len 9) -> groups [3,4,0], [1,2], [5,6]
    assert [g["accuracy"] for g in out["groups"]] == pytest.approx([2 / 3, 0.5, 1.0])


def test_variance_windows_hand_made():
    # 6 samples, 2 runs; variances increase with index except sample 5 (zero variance)
    preds = np.array([[0.6, 0.6], [0.3, 0.5], [0.8, 0.4], [0.9, 0.1], [1.0, 0.0], [0.2, 0.2]])
    labels = np.array([1, 0, 1, 1, 0, 1])
    out = analysis.accuracy_vs_variance(labels, preds, window=3)
    var = np.var(preds, axis=1)
    order = np.argsort(var, kind="stable")
    assert order.tolist() == [0, 5, 1, 2, 3, 4]
    # correct (mean > 0.5 == label): s0 0.6 y1 ok; s5 0.2 y1 wrong; s1 0.4 y0 ok; s2 0.6 y1 ok; s3 0.5 y1 wrong;
    # s4 0.5 y0 ok  -> sorted [1, 0, 1, 1, 0, 1]
    assert out["window_accuracy"] == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert len(out["window_accuracy"]) == 6 - 3 + 1
    assert out["window_mean_variance"][0] == pytest.approx(var[[0, 5, 1]].mean())
    out1 = analysis.accuracy_vs_variance(labels, preds, window=1)
    assert out1["window_accuracy"] == [1, 0, 1, 1, 0, 1]
    assert analysis.accuracy_vs_variance(labels, preds, window=6)["window_accuracy"] == [pytest.approx(4 / 6)]


def _numpy_ctr_metrics(y, p):
    """AUC by counting pairs (ties 1/2), LogLoss and accuracy of p > 0.5, written out in numpy."""
    pos, neg = p[y == 1], p[y == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    logloss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    return {"auc": pairs / (len(pos) * len(neg)), "logloss": logloss, "acc": np.mean((p > 0.5) == y)}


def test_sweeps_follow_eq_10_on_a_hand_made_case():
    """Five samples, K = 2 traces, one general run: P_final from eq. 10 written out here, its metrics in numpy."""
    y = np.array([1, 0, 1, 0, 1])
    tr = np.array([[0.8, 0.8], [0.6, 0.2], [0.3, 0.5], [0.9, 0.5], [0.7, 0.3]])
    ge = np.array([0.6, 0.3, 0.7, 0.4, 0.45])
    mean_r, var_r = tr.mean(1), ((tr - tr.mean(1, keepdims=True)) ** 2).mean(1)  # ddof = 0
    # mean_r = [.8, .4, .4, .7, .5], var_r = [0, .04, .01, .04, .04]; one general run: var_g = 0
    np.testing.assert_allclose(var_r, [0, 0.04, 0.01, 0.04, 0.04], atol=1e-12)

    def eq10(alpha, eps):
        w_r, w_g = alpha / (var_r + eps), 1 / (0 + eps)
        return (w_r * mean_r + w_g * ge) / (w_r + w_g)

    out = analysis.alpha_sweep(y, tr, ge)
    assert out["param"] == "alpha" and [r["alpha"] for r in out["rows"]] == [0.1, 0.2, 0.3, 0.4, 0.5]
    for row in out["rows"]:
        assert row["epsilon"] == 1e-3
        want = _numpy_ctr_metrics(y, eq10(row["alpha"], 1e-3))
        assert {k: row[k] for k in want} == pytest.approx(want, rel=1e-5)
    oute = analysis.epsilon_sweep(y, tr, ge, epsilons=(1e-2, 1e-4))
    assert [r["epsilon"] for r in oute["rows"]] == [1e-2, 1e-4]
    for row in oute["rows"]:
        want = _numpy_ctr_metrics(y, eq10(0.1, row["epsilon"]))
        assert {k: row[k] for k in want} == pytest.approx(want, rel=1e-5)
    # Sample 0 has consistent traces (var 0) and equal weight per unit alpha: at alpha = 0.5, eps = 1e-3,
    # P_final[0] = (0.5 * 0.8 + 0.6) / 1.5 = 2/3 by hand.
    assert eq10(0.5, 1e-3)[0] == pytest.approx(2 / 3)


def test_latency_ratio():
    out = analysis.latency_comparison({"ml-1m": ([1.0, 3.0], [22.0, 22.0]), "bx": ([2.0], [24.0])})
    assert out["datasets"]["ml-1m"]["ratio"] == 11.0
    assert out["datasets"]["bx"]["ratio"] == 12.0
    assert out["overall_ratio"] == 11.5
    assert out["datasets"]["ml-1m"]["general"]["median"] == 2.0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: analysis.accuracy_by_length([0, 1], [[0.1], [0.2]], [[1, 2], [3, 4]]), "same shape"),
        (lambda: analysis.accuracy_by_length([0, 1], [0.1, 0.2], [1, 2], num_groups=3), "num_groups"),
        (lambda: analysis.accuracy_vs_variance([0, 1], [[0.1], [np.nan]], window=1), "NaN"),
        (lambda: analysis.accuracy_vs_variance([0, 1], [[0.1], [0.2]], window=3), "window"),
        (lambda: analysis.accuracy_vs_variance([0, 1, 1], [[0.1], [0.2]], window=1), "3 samples"),
        (lambda: analysis.latency_comparison({"a": ([1.0], [0.0])}), "positive"),
        (lambda: analysis.save_figure({"figure": "nope"}, "/tmp/x.png"), "unknown figure"),
        (lambda: analysis.save_figure({"figure": "latency"}, "/tmp/x.jpg"), r"\.png"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_figures_written_and_json_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    tr = rng.random((200, 5))
    ge = rng.random(200)
    all_numbers = {
        "fig2": analysis.accuracy_by_length(y, tr, rng.integers(100, 2000, (200, 5))),
        "fig3": analysis.accuracy_vs_variance(y, tr, window=50),
        "fig6": analysis.alpha_sweep(y, tr, ge),
        "fig7": analysis.epsilon_sweep(y, tr, ge),
        "fig9": analysis.latency_comparison({"ml-1m": (rng.random(20) + 0.1, rng.random(20) * 10 + 1)}),
    }
    for name, numbers in all_numbers.items():
        png, js = analysis.save_figure(numbers, str(tmp_path / "figs" / f"{name}.png"))
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(png) > 1000
        with open(js) as f:
            assert json.load(f) == json.loads(json.dumps(numbers))
    leftovers = [p for p in os.listdir(tmp_path / "figs") if p.endswith(".tmp")]
    assert leftovers == []
    assert sorted(os.listdir(tmp_path / "figs")) == sorted(f"{n}.{e}" for n in all_numbers for e in ("png", "json"))
