"""Knowledge-injected prompting (KP): the general model's prediction P_G as a sentence (spec 3.4, eq. 9).

The official `inf_KP.py` appends this hint to the reasoning model's prompt so that the reasoning
LLM sees what the tuned general LLM thinks, with a hedge word for its confidence:

    label = 'Yes' if P_G > 0.5 else 'No'
    ex    = 'is' if |P_G - 0.5| > 0.2 else ('may be' if |P_G - 0.5| > 0.1 else 'might be')
    HINT  = "\\nAnother one think the answer " + ex + " " + label + ".\\n"

The text, grammar included ("Another one think"), is kept verbatim because the reasoning model's
outputs (and the paper's numbers) were produced with exactly this string.

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


def hint_parts(p_general: float) -> tuple[str, str]:
    """(hedge, label) for one P_G: hedge in {"is", "may be", "might be"}, label in {"Yes", "No"}."""
    p = float(p_general)
    if math.isnan(p) or not 0.0 <= p <= 1.0:
        raise ValueError(f"P_G must be a probability in [0, 1], got {p_general!r}")
    label = "Yes" if p > 0.5 else "No"
    margin = abs(p - 0.5)
    hedge = "is" if margin > STRONG_MARGIN else ("may be" if margin > MEDIUM_MARGIN else "might be")
    return hedge, label


def knowledge_hint(p_general: float) -> str:
    """The hint string appended to the reasoning prompt for one sample (leading and trailing newline)."""
    hedge, label = hint_parts(p_general)
    return HINT_PREFIX + hedge + " " + label + ".\n"


def knowledge_hints(p_general: Iterable[float]) -> list[str]:
    """`knowledge_hint` for every sample; the error names the index of a bad value."""
    out = []
    for i, p in enumerate(p_general):
        try:
            out.append(knowledge_hint(p))
        except ValueError as err:
            raise ValueError(f"P_G[{i}]: {err}") from None
    return out
