"""Retrieval-backed history orders: `(split, index) -> [HistoryEntry]` functions over the rows the retrieval
stage ordered (HistoryFn). The entries themselves, and the `simple` order, are data/histories.py's.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rallrec_jax.data.histories import HistoryEntry, positions_in_history

if TYPE_CHECKING:  # annotations only: importing them here would tie the data layer's callers to retrieval
    from rallrec_jax.generation.examples import HistoryFn
    from rallrec_jax.retrieval.stage import RetrievalStage


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
