"""Knowledge-injected prompting (KP): the general model's prediction P_G as a sentence (spec 3.4, eq. 9).

The official `inf_KP.py` appends this hint to the reasoning model's prompt so that the reasoning
LLM sees what the tuned general LLM thinks, with a hedge word for its confidence:

    label = 'Yes' if P_G > 0.5 else 'No'
    ex    = 'is' if |P_G - 0.5| > 0.2 else ('may be' if |P_G - 0.5| > 0.1 else 'might be')
    HINT  = "\\nAnother one think the answer " + ex + " " + label + ".\\n"

The text, grammar included ("Another one think"), is kept verbatim because the reasoning model's
outputs (and the paper's numbers) were produced with exactly this string.

The bands were set for the official P_G, a double softmax (softmax over the two full-vocabulary
probabilities), which lives in [0.269, 0.731]: |P_G - 0.5| > 0.2 is a confident answer there. The plain
softmax over the Yes/No logits (the default here, `evaluate.double_softmax=False`) spans [0, 1], and with the
same margins almost every hint would read "is". So the bands follow P_G's mode: a plain-softmax P is read on
the double-softmax scale first. When Yes and No hold the probability mass (a tuned model), the double softmax
of full-vocabulary probabilities (P, 1 - P) is sigmoid(P - (1 - P)) = sigmoid(2P - 1), so the official bands
apply to that value: "is" for |P - 0.5| > 0.4236, "may be" above 0.2027 (`to_double_softmax_scale`).
`reasoning.hint_bands="official"` applies the official margins to P_G as it is, whatever its mode.

The comparisons are done in Python float64 arithmetic, as the official script does on P_G read
from its text file. That makes the band edges follow float64 rounding, e.g. |0.7 - 0.5| is
0.19999999999999996, so P_G = 0.7 gives 'may be' while 0.3 gives |0.3 - 0.5| = 0.2, also 'may be';
0.6 gives 0.09999999999999998, 'might be'. A float32 P_G is widened first (float32 0.7 is
0.699999988..., also 'may be').
"""
from __future__ import annotations

import math
from collections.abc import Iterable

HINT_PREFIX = "\nAnother one think the answer "
STRONG_MARGIN = 0.2  # |P_G - 0.5| above this: "is"
MEDIUM_MARGIN = 0.1  # above this: "may be"; otherwise "might be"


def to_double_softmax_scale(p: float) -> float:
    """sigmoid(2p - 1): the official double softmax of a model whose Yes/No probabilities are (p, 1 - p)."""
    return 1.0 / (1.0 + math.exp(-(2.0 * p - 1.0)))


def hint_parts(p_general: float, double_softmax: bool = True) -> tuple[str, str]:
    """(hedge, label) for one P_G: hedge in {"is", "may be", "might be"}, label in {"Yes", "No"}.

    `double_softmax`: whether P_G is the official double softmax (the bands apply as they are) or the plain
    Yes/No softmax (read on the double-softmax scale first; module docstring)."""
    p = float(p_general)
    if math.isnan(p) or not 0.0 <= p <= 1.0:
        raise ValueError(f"P_G must be a probability in [0, 1], got {p_general!r}")
    label = "Yes" if p > 0.5 else "No"
    margin = abs((p if double_softmax else to_double_softmax_scale(p)) - 0.5)
    hedge = "is" if margin > STRONG_MARGIN else ("may be" if margin > MEDIUM_MARGIN else "might be")
    return hedge, label


def knowledge_hint(p_general: float, double_softmax: bool = True) -> str:
    """The hint string appended to the reasoning prompt for one sample (leading and trailing newline)."""
    hedge, label = hint_parts(p_general, double_softmax)
    return HINT_PREFIX + hedge + " " + label + ".\n"


def knowledge_hints(p_general: Iterable[float], double_softmax: bool = True) -> list[str]:
    """`knowledge_hint` for every sample; the error names the index of a bad value."""
    out = []
    for i, p in enumerate(p_general):
        try:
            out.append(knowledge_hint(p, double_softmax))
        except ValueError as err:
            raise ValueError(f"P_G[{i}]: {err}") from None
    return out
