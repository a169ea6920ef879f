"""early_stopping.py: a hand-made sequence of validation values, both directions, NaN, and the checkpoint round trip."""
import math

import numpy as np
import pytest

from rallrec_jax.generation.early_stopping import EarlyStopping


def test_loss_sequence_by_hand():
    # losses after steps 10..60: 1.0 best, 0.8 best, 0.9 worse, nan worse, 0.8 equal (not better) -> patience 3 out
    stop = EarlyStopping.for_metric("eval_loss", patience=3)
    got = [stop.update(v, s) for v, s in [(1.0, 10), (0.8, 20), (0.9, 30), (math.nan, 40), (0.8, 50)]]
    assert got == [True, True, False, False, False]
    assert (stop.best, stop.best_step, stop.bad, stop.patience_left, stop.done) == (0.8, 20, 3, 0, True)


def test_auc_goes_up_and_patience_zero_never_stops():
    stop = EarlyStopping.for_metric("eval_auc", patience=0)
    got = [stop.update(v, s) for s, v in enumerate([0.6, 0.55, 0.7, 0.69, 0.5, 0.4], start=1)]
    assert got == [True, False, True, False, False, False]
    assert (stop.best, stop.best_step, stop.bad, stop.done, stop.patience_left) == (0.7, 3, 3, False, None)


def test_first_nan_is_not_a_best():
    stop = EarlyStopping(patience=2)
    assert not stop.update(math.nan, 1) and stop.best_step == -1 and math.isnan(stop.best)
    assert stop.patience_left == 1
    assert stop.update(2.5, 2) and (stop.best, stop.best_step, stop.bad) == (2.5, 2, 0)


def test_checkpoint_round_trip_resumes_the_count():
    stop = EarlyStopping.for_metric("eval_loss", patience=2)
    stop.update(1.0, 5)
    stop.update(1.5, 10)
    arrays = stop.to_arrays()
    assert set(arrays) == {"best", "best_step", "bad", "done"}
    assert all(a.dtype == np.float64 and a.shape == () for a in arrays.values())
    resumed = EarlyStopping.for_metric("eval_loss", patience=2)
    resumed.restore({k: np.asarray(v) for k, v in arrays.items()})
    assert (resumed.best, resumed.best_step, resumed.bad, resumed.done) == (1.0, 5, 1, False)
    assert not resumed.update(1.2, 15) and resumed.done  # the second bad evaluation, as uninterrupted


def test_unknown_metric_names_the_setting():
    with pytest.raises(ValueError, match="finetune.early_stopping_metric"):
        EarlyStopping.for_metric("eval_acc", patience=1)
