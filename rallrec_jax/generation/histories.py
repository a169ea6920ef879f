"""Which history items a prompt shows, and in what order: the `simple` order (the K most recent items), entries
for retrieved items (their rating and chronological position), and retrieval-backed orders (HistoryFn from
the retrieval stage).

A history entry is (item, rating, position): `position` is the item's place in the user's chronological
history, so that a prompt that does not fit the model's context can drop the *oldest* items first, whatever
order they are shown in (generation/prompts.py).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rallrec_jax.data.ctr import CTRData

if TYPE_CHECKING:  # annotations only: importing them here would tie the data layer's callers to retrieval
    from rallrec_jax.generation.examples import HistoryFn
    from rallrec_jax.retrieval.stage import RetrievalStage


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


def retrieved_history(stage: RetrievalStage, rows: Mapping[str, Sequence[int]], order: str,
                      kind: str | None = None) -> HistoryFn:
    """`(split, index) -> [HistoryEntry]` for the given rows of each split, retrieved once in batch.

    Entries carry each item's rating and position from the sample's history (its last occurrence), so
    an over-long prompt can still drop its oldest items first."""
    lookup: dict[tuple[str, int], Sequence[int]] = {}
    for split, indices in rows.items():
        indices = [int(i) for i in indices]
        for index, (items, _) in zip(indices, stage.retrieve(split, indices, order, kind)):
            lookup[(split, index)] = [int(i) for i in items]

    def history(split: str, index: int) -> list[HistoryEntry]:
        key = (split, int(index))
        if key not in lookup:
            raise KeyError(f"{split} row {index} was not retrieved for order {order!r} (kind {kind!r})")
        return positions_in_history(stage.data, split, int(index), lookup[key])

    return history
