"""hints.py: every confidence band, the exact boundaries, and bad input."""
import numpy as np
import pytest

from rallrec_jax.reasoning.hints import hint_parts, knowledge_hint, knowledge_hints


def _official(p):
    """The official inf_KP.py lines, transcribed."""
    label = 'Yes' if p > 0.5 else 'No'
    ex = 'is' if abs(p - 0.5) > 0.2 else ('may be' if abs(p - 0.5) > 0.1 else 'might be')
    return "\nAnother one think the answer " + ex + " " + label + ".\n"


@pytest.mark.parametrize(
    "p, text",
    [
        (0.95, "\nAnother one think the answer is Yes.\n"),
        (0.05, "\nAnother one think the answer is No.\n"),
        (0.65, "\nAnother one think the answer may be Yes.\n"),
        (0.35, "\nAnother one think the answer may be No.\n"),
        (0.55, "\nAnother one think the answer might be Yes.\n"),
        (0.45, "\nAnother one think the answer might be No.\n"),
    ],
)
def test_bands_verbatim(p, text):
    assert knowledge_hint(p) == text


@pytest.mark.parametrize(
    "p, hedge, label",
    [
        (0.5, "might be", "No"),   # not > 0.5
        (0.6, "might be", "Yes"),  # |0.6-0.5| = 0.09999999999999998, not > 0.1
        (0.7, "may be", "Yes"),    # 0.19999999999999996, not > 0.2
        (0.4, "might be", "No"),   # 0.09999999999999998
        (0.3, "may be", "No"),     # exactly 0.2, not > 0.2
        (0.7000001, "is", "Yes"),
        (0.2999999, "is", "No"),
        (0.6000001, "may be", "Yes"),
        (0.5000001, "might be", "Yes"),
        (0.0, "is", "No"),
        (1.0, "is", "Yes"),
    ],
)
def test_boundaries(p, hedge, label):
    assert hint_parts(p) == (hedge, label)
    assert knowledge_hint(p) == _official(p)


def test_agrees_with_official_on_a_grid():
    grid = np.linspace(0, 1, 2001)
    assert knowledge_hints(grid) == [_official(float(p)) for p in grid]
    # float32 inputs are widened, then follow the same rule
    assert knowledge_hint(np.float32(0.7)) == _official(float(np.float32(0.7)))


@pytest.mark.parametrize("bad", [float("nan"), -0.1, 1.5])
def test_bad_probability(bad):
    with pytest.raises(ValueError, match="probability"):
        knowledge_hint(bad)
    with pytest.raises(ValueError, match=r"P_G\[1\]"):
        knowledge_hints([0.5, bad])
