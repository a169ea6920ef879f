"""Retrieval-backed history orders for the prompt builders: HistoryFn from the retrieval stage."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from rallrec_jax.generation import prompts
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

    def history(split: str, index: int) -> list[prompts.HistoryEntry]:
        key = (split, int(index))
        if key not in lookup:
            raise KeyError(f"{split} row {index} was not retrieved for order {order!r} (kind {kind!r})")
        return prompts.positions_in_history(stage.data, split, int(index), lookup[key])

    return history
