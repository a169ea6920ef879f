"""CTR prompts assembled for one prepared data set (the draw of instruction-tuning rows: training_rows.py).

A prompt is built from a sample's profile, its target, and an *ordered* history: the list of
(item, rating, position) that retrieval chose (entries: data/histories.py; retrieved orders:
generation/histories.py), in the order it is to be shown, through the official template (prompts/ctr.py).
`position` is the item's place in the user's chronological history, so that a prompt that does not fit the
model's context can drop the *oldest* items first.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from rallrec_jax.data.ctr import CTRData
from rallrec_jax.data.histories import HistoryEntry
from rallrec_jax.prompts.ctr import ORDERS, history_list, template_for


@dataclasses.dataclass
class Prompt:
    text: str
    label: int
    shown: list[HistoryEntry]
    dropped: int  # oldest history items dropped to fit the context


class PromptBuilder:
    """Builds the user-turn text of CTR prompts for one prepared data set."""

    def __init__(self, data: CTRData):
        self.data = data
        self.template = template_for(data.name)
        self.titles = data.item_fields["title"]

    def profile(self, user: int) -> dict:
        return {field: str(values[user]) for field, values in self.data.user_fields.items()}

    def text(self, split: str, index: int, shown: Sequence[HistoryEntry], order: str) -> str:
        if order not in ORDERS:
            raise ValueError(f"history order {order!r} is not one of {ORDERS}")
        s = self.data.samples[split]
        hist = history_list([self.titles[e.item] for e in shown], [e.rating for e in shown])
        return self.template(self.profile(int(s["user"][index])), hist, str(self.titles[s["item"][index]]), order)

    def build(self, split: str, index: int, shown: Sequence[HistoryEntry], order: str,
              count_tokens: Callable[[str], int] | None = None, max_tokens: int | None = None) -> Prompt:
        """The prompt, with the oldest shown items dropped until `count_tokens(text) <= max_tokens`.

        If even an empty history does not fit, that is an error naming the sample: the template and
        target alone exceed the context, and no truncation of the history can help.
        """
        shown = list(shown)
        label = int(self.data.samples[split]["label"][index])
        text = self.text(split, index, shown, order)
        if count_tokens is None or max_tokens is None or count_tokens(text) <= max_tokens:
            return Prompt(text, label, shown, 0)
        by_age = sorted(range(len(shown)), key=lambda k: shown[k].position)
        lo, hi = 1, len(shown)  # binary search on how many of the oldest to drop
        best = None
        while lo <= hi:
            mid = (lo + hi) // 2
            gone = set(by_age[:mid])
            kept = [e for k, e in enumerate(shown) if k not in gone]
            candidate = self.text(split, index, kept, order)
            if count_tokens(candidate) <= max_tokens:
                best, hi = (candidate, kept, mid), mid - 1
            else:
                lo = mid + 1
        if best is None:
            raise ValueError(f"{split} sample {index}: the prompt exceeds {max_tokens} tokens even with no "
                             f"history ({count_tokens(self.text(split, index, [], order))} tokens)")
        return Prompt(best[0], label, best[1], best[2])
