"""hints.py: every confidence band, the exact boundaries, and bad input."""
import dataclasses
from fractions import Fraction

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


def _exact_band(p: float) -> tuple[str, str]:
    """The band by exact rational arithmetic on the float's value (fractions, no float subtraction).

    For p >= 0.25 the float64 difference p - 0.5 is exact (Sterbenz), and below 0.25 the margin exceeds 0.25,
    so this agrees with the official float64 reading everywhere on [0, 1]."""
    q = Fraction(p)
    margin = abs(q - Fraction(1, 2))
    hedge = "is" if margin > Fraction(0.2) else ("may be" if margin > Fraction(0.1) else "might be")
    return hedge, ("Yes" if q > Fraction(1, 2) else "No")


def test_bands_on_a_grid_against_exact_arithmetic():
    grid = np.linspace(0, 1, 2001)
    want = ["\nAnother one think the answer " + h + " " + lab + ".\n" for h, lab in map(_exact_band, grid.tolist())]
    assert knowledge_hints(grid) == want
    # Counted by hand on the 0.0005 grid (grid[i] = i / 2000, except grid[1400] = 0.7000000000000001):
    # "is" for i < 600 and i >= 1400 (600 + 601), "may be" for 600 <= i < 800 and 1200 < i < 1400 (200 + 199),
    # "might be" for 800 <= i <= 1200 (401; 0.4 and 0.6 sit at |p - 0.5| = 0.0999..., not > 0.1).
    hedges = [hint_parts(p)[0] for p in grid]
    assert (hedges.count("is"), hedges.count("may be"), hedges.count("might be")) == (1201, 399, 401)
    assert hedges[599:602] == ["is", "may be", "may be"] and hedges[1399:1401] == ["may be", "is"]
    # float32 inputs are widened: float32 0.7 is 0.699999988..., margin below 0.2, so "may be"
    assert knowledge_hint(np.float32(0.7)) == "\nAnother one think the answer may be Yes.\n"
    assert knowledge_hint(np.float32(0.71)) == "\nAnother one think the answer is Yes.\n"


@pytest.mark.parametrize("bad", [float("nan"), -0.1, 1.5])
def test_bad_probability(bad):
    with pytest.raises(ValueError, match="probability"):
        knowledge_hint(bad)
    with pytest.raises(ValueError, match=r"P_G\[1\]"):
        knowledge_hints([0.5, bad])


def _double_softmax(logit_yes, logit_no, rest_logits):
    """The official P_G from the full-vocabulary logits: softmax over the two full-vocabulary probabilities."""
    z = np.concatenate([[logit_yes, logit_no], rest_logits])
    prob = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    return 1 / (1 + np.exp(-(prob[0] - prob[1])))


def test_bands_follow_the_plain_softmax_mode():
    """A tuned model (Yes and No hold ~all the mass): the hint read from the plain Yes/No softmax with the bands
    that follow its mode equals the official hint read from the official double-softmax P_G of the same logits,
    while the official margins on the plain P say "is" almost everywhere."""
    rest = np.full(49150, -30.0)  # the rest of the vocabulary: negligible mass
    same, official_is, follow_is, total, hedges = 0, 0, 0, 0, set()
    for gap in np.linspace(-6, 6, 241):  # logit(Yes) - logit(No)
        plain = 1 / (1 + np.exp(-gap))
        double = _double_softmax(gap / 2, -gap / 2, rest)
        margin = abs(double - 0.5)
        if min(abs(margin - 0.2), abs(margin - 0.1)) < 1e-3:
            continue  # at a band edge the two roundings may differ
        total += 1
        same += knowledge_hint(plain, double_softmax=False) == knowledge_hint(double)
        official_is += hint_parts(plain)[0] == "is"
        follow_is += hint_parts(plain, double_softmax=False)[0] == "is"
        hedges.add(hint_parts(plain, double_softmax=False)[0])
    assert same == total
    assert hedges == {"is", "may be", "might be"}
    assert official_is / total > 0.85 and follow_is < 0.7 * official_is


def test_the_reasoning_stage_reads_the_bands_of_its_p_g_mode():
    from configs import base_generation, base_reasoning
    import ml_collections

    from rallrec_jax.reasoning import stage
    from rallrec_jax.reasoning.settings import ReasoningSettings, ReasoningRun

    config = ml_collections.ConfigDict()
    base_generation.add_generation(config)
    config.data = ml_collections.ConfigDict({"name": "movielens-1m"})
    config.reasoning = base_reasoning.reasoning_config()
    run = ReasoningRun.from_config(config)
    with_bands = lambda bands, **kw: dataclasses.replace(  # noqa: E731
        run, reasoning=dataclasses.replace(run.reasoning, hint_bands=bands),
        evaluate=dataclasses.replace(run.evaluate, **kw))
    assert run.reasoning == ReasoningSettings() and run.reasoning.hint_bands == "follow"
    p_g = {17: 0.8}  # plain softmax 0.8: the double-softmax scale reads sigmoid(0.6) = 0.646 -> "may be"
    assert stage.hint_bands(run) == "softmax"
    assert stage.hint_function(run, p_g)(17) == "\nAnother one think the answer may be Yes.\n"
    official = with_bands("official")
    assert stage.hint_function(official, p_g)(17) == _official(0.8) == "\nAnother one think the answer is Yes.\n"
    double = with_bands("follow", double_softmax=True)  # the official P_G: bands as they are
    assert stage.hint_bands(double) == "double_softmax" and stage.hint_function(double, p_g)(17) == _official(0.8)
    with pytest.raises(ValueError, match="hint_bands='loose'"):
        stage.hint_bands(with_bands("loose"))
