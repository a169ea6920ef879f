"""training_rows.py: the official draw of instruction-tuning rows and the `mixed` interleave, against Python's
own `random.seed(42); random.sample` (what the official code calls) and hand-written lists."""
import random

import pytest

from rallrec_jax.generation import training_rows


def test_training_sampling_and_mixed_interleave():
    a = training_rows.sample_training_indices(1000, 5)
    assert a == training_rows.sample_training_indices(1000, 5) and len(set(a)) == 5
    random.seed(42)
    assert a == random.sample(range(1000), 5)  # the official draw
    mixed = training_rows.mixed_training_set([7, 9], {"simple": ["s7", "s9"], "high": ["h7", "h9"],
                                                      "sequential": ["q7", "q9"]})
    assert mixed == ["h7", "q7", "s7", "h9", "q9", "s9"]
    with pytest.raises(ValueError, match="has 1 prompts for 2 rows"):
        training_rows.mixed_training_set([7, 9], {"high": ["h7"]})
    with pytest.raises(ValueError, match="asked for 6 training rows, the train split has 5"):
        training_rows.sample_training_indices(5, 6)


def test_training_plan_simple_and_mixed():
    rows, orders = training_rows.training_plan(1000, 256, 0, ["simple"])
    random.seed(42)
    assert orders == ["simple"] and rows == random.sample(range(1000), 256)
    rows, orders = training_rows.training_plan(1000, 256, 100, ["simple", "high", "sequential"])
    random.seed(42)
    assert orders == ["high", "sequential", "simple"] and rows == random.sample(range(1000), 256)[:34]  # ceil(100/3)
    rows, _ = training_rows.training_plan(10, 0, 0, ["simple"])  # sample_size 0: every train row, drawn in order
    random.seed(42)
    assert rows == random.sample(range(10), 10)
