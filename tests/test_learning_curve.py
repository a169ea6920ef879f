"""The learning curve (generation/learning_curve.py): examples seen counted by hand, the last record of a resumed
step wins, a malformed log line is named, and the PNG and its numbers are written."""
import json

import pytest

from rallrec_jax.generation import batches
from rallrec_jax.generation import learning_curve as lc


@pytest.mark.parametrize("n, eb, want", [
    (10, 4, [0, 4, 8, 10, 14, 18, 20]),  # 3 steps an epoch, the third has 2 real rows and 2 fillers
    (8, 4, [0, 4, 8, 12, 16]),
    (3, 8, [0, 3, 6]),  # one step an epoch, mostly fillers
])
def test_examples_seen_counts_real_rows_only(n, eb, want):
    assert [batches.examples_seen(n, eb, k) for k in range(len(want))] == want
    # The same count from the rows each step actually draws (fillers are None).
    drawn = [0]
    for step in range(len(want) - 1):
        drawn.append(drawn[-1] + sum(r is not None for r in batches.step_rows(n, eb, 0, step)[0]))
    assert drawn == want


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_a_resumed_step_keeps_its_last_record_and_the_axis_is_examples_seen(tmp_path):
    _write(tmp_path / "metrics.jsonl", [
        {"step": 1, "loss": 0.9, "examples_seen": 8},
        {"step": 2, "loss": 0.8, "examples_seen": 16},
        {"step": 2, "eval_loss": 0.7, "eval_auc": 0.55, "examples_seen": 16, "best_step": 2},
        {"step": 3, "loss": 0.75, "examples_seen": 24},  # logged, then the run was killed before its checkpoint
        {"step": 3, "loss": 0.6, "examples_seen": 24},  # the resumed run's step 3
        {"step": 4, "loss": 0.5, "examples_seen": 32},
        {"step": 4, "eval_loss": 0.65, "eval_auc": 0.6, "examples_seen": 32, "best_step": 4},
    ])
    curve = lc.read_curve(tmp_path)
    assert curve["x"] == "examples_seen"
    assert curve["train"] == {"step": [1, 2, 3, 4], "examples_seen": [8, 16, 24, 32], "loss": [0.9, 0.8, 0.6, 0.5]}
    assert curve["validation"]["step"] == [2, 4] and curve["validation"]["eval_auc"] == [0.55, 0.6]
    assert curve["validation"]["eval_acc"] == [None, None]  # absent metrics are gaps, not zeros
    assert curve["best_step"] == 4


def test_an_older_log_without_examples_seen_falls_back_to_steps(tmp_path):
    _write(tmp_path / "metrics.jsonl", [{"step": 1, "loss": 1.0}, {"step": 1, "eval_loss": 0.9}])
    curve = lc.read_curve(tmp_path)
    assert curve["x"] == "step" and curve["validation"]["step"] == [1]


def test_a_malformed_line_is_named_and_a_missing_log_says_where(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": \n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a metrics record"):
        lc.read_curve(tmp_path)
    with pytest.raises(FileNotFoundError, match="no metrics log"):
        lc.read_curve(tmp_path / "nothing")


def test_the_png_and_its_numbers_are_written(tmp_path):
    _write(tmp_path / "metrics.jsonl", [
        {"step": s, "loss": 1.0 / s, "examples_seen": 8 * s} for s in range(1, 9)] + [
        {"step": s, "eval_loss": 0.7, "eval_auc": 0.5 + s / 100, "examples_seen": 8 * s} for s in (4, 8)])
    png, numbers = lc.save_learning_curve(tmp_path)
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert json.loads(open(numbers).read()) == json.loads(json.dumps(lc.read_curve(tmp_path)))
    with pytest.raises(ValueError, match="must end in .png"):
        lc.save_learning_curve(tmp_path, tmp_path / "curve.jpg")
