"""A sample's history as the entries a prompt shows: the `simple` order (the K most recent items) and the
entries of given items (their rating and chronological position). Data only: which items retrieval picks
is the retrieval stage's job, and generation/histories.py joins the two.

A history entry is (item, rating, position): `position` is the item's place in the user's chronological
history, so that a prompt that does not fit the model's context can drop the *oldest* items first, whatever
order they are shown in (generation/prompts.py).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from rallrec_jax.data.ctr import CTRData


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    item: int  # item index
    rating: int
    position: int  # place in the user's chronological history (0 = oldest)


def recent_history(data: CTRData, split: str, index: int, k: int) -> list[HistoryEntry]:
    """The `simple` order: the K most recent items, chronological (BX: the last K of its shuffled list,
    shown most recent first as the official BookCrossing prompts)."""
    hist = data.history(split, index)
    n = len(hist["item"])
    entries = [HistoryEntry(int(hist["item"][p]), int(hist["rating"][p]), p) for p in range(max(0, n - k), n)]
    return entries[::-1] if data.name == "bookcrossing" else entries


def positions_in_history(data: CTRData, split: str, index: int, items: Sequence[int]) -> list[HistoryEntry]:
    """Entries for retrieved items (item indices, in display order): each takes the rating and the
    position of its most recent occurrence in the history (duplicates collapse, last rating wins)."""
    hist = data.history(split, index)
    last: dict[int, int] = {}
    for p, item in enumerate(hist["item"].tolist()):
        last[item] = p
    missing = [i for i in items if i not in last]
    if missing:
        raise ValueError(f"{split} sample {index}: items {missing[:5]} are not in the sample's history")
    return [HistoryEntry(int(i), int(hist["rating"][last[i]]), last[i]) for i in items]
