"""Top-K history retrieval and the reranker (spec 2.6, 2.7).

For a CTR sample (history items oldest first, their ratings, a target item) this picks at most K history
items and orders them for the prompt:

- `simple`: the K most recent items, chronological (no retrieval);
- `high`: the K items most similar to the target, similarity descending;
- `sequential`: the same K items restored to chronological order;
- `rerank` (paper eq. 8): an embedding channel (top-K by similarity, position k = similarity rank) and a
  time channel (K most recent, k = recency rank); item score = S_c / k^beta with S_c = gamma (embedding)
  or 1 - gamma (time); an item in both channels keeps its max score; the top-K by score, score descending;
- `official_rerank`: the released code's hard split, K1 = int(2K//3) relevant + K2 = K - K1 recent
  (ML-1M/Amazon: relevant items most recent first, recent items chronological; BookCrossing: relevant in
  similarity order, recent most recent first; Amazon/BookCrossing only when the history is longer than K,
  else the `high` list).

Before any of this the history is collapsed: the target is dropped (Amazon can repeat items) and a repeated
item keeps its last occurrence (its most recent position and last rating, spec 2.6). Nothing outside the
history is ever returned. Similarity ties break by the lower item index (the official code walks a global
`argsort(-sim)` ranking, which is stable in item index).

Two-channel similarities ([..., 2]: text, colla; mix.ItemSimilarity("retri_then_mix")) are the paper's
"Retri.-then-Mix" (Fig. 8; the official `hybrid` embed_type, `hybrid_ret_get_prompt`): the first
K1 = ceil(K/2) items of the text ranking, in text order, then the other history items in colla order, so
its top K is the code's K1 text items + the next K2 = floor(K/2) colla items not already taken (an item
high in both rankings is counted once and the colla walk goes deeper). That composite ranking stands in
for the similarity ranking: `high` is the Retri.-then-Mix list, and `sequential`, `rerank` and
`official_rerank` order it as they order any ranking. Both rankings, like every rank here, run over the
collapsed history only (never padding, the target or an earlier repeat).

`order_history` is the plain per-sample definition; `retrieve_batch` is the vectorised numpy version for
many samples (tests hold them equal), with similarities from any `similarity(targets[B], cands[B, H])`
callable (mix.ItemSimilarity).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

ORDERS = ("simple", "high", "sequential", "rerank", "official_rerank")
OFFICIAL_VARIANTS = ("ml", "amazon", "bx")

# targets [B], candidates [B, H] -> [B, H], or [B, H, 2] (text, colla) for Retri.-then-Mix
SimilarityFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def retri_then_mix_split(k: int) -> tuple[int, int]:
    """(K1, K2): ceil(K/2) items from the text ranking, floor(K/2) from the colla ranking (official code)."""
    k1 = (k + 1) // 2
    return k1, k - k1


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
    """Paper symbols: K = k_history (30), gamma (2/3; searched over {1/2, 2/3, 4/5}), beta (1)."""

    k_history: int = 30
    order: str = "rerank"
    gamma: float = 2.0 / 3.0
    beta: float = 1.0
    official_variant: str = "ml"  # which data set's branch of the code `official_rerank` reproduces

    def __post_init__(self):
        if self.order not in ORDERS:
            raise ValueError(f"order={self.order!r} is not one of {ORDERS}")
        if self.k_history <= 0:
            raise ValueError(f"k_history must be positive, got {self.k_history}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.official_variant not in OFFICIAL_VARIANTS:
            raise ValueError(f"official_variant={self.official_variant!r} is not one of {OFFICIAL_VARIANTS}")


def collapse_history(items: np.ndarray, ratings: np.ndarray, target: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drops the target and earlier repeats; returns (items, ratings, positions) in chronological order.

    positions are indices into the original history (the last occurrence of each item).
    """
    items = np.asarray(items)
    ratings = np.asarray(ratings)
    if items.ndim != 1 or items.shape != ratings.shape:
        raise ValueError(f"history items {items.shape} and ratings {ratings.shape} must be 1-D of equal length")
    n = items.size
    # Last occurrence: first occurrence in the reversed history.
    _, first_in_rev = np.unique(items[::-1], return_index=True)
    keep = np.sort(n - 1 - first_in_rev)
    keep = keep[items[keep] != target]
    return items[keep], ratings[keep], keep


def _rerank_select(sim_rank: np.ndarray, recency_rank: np.ndarray, k: int, gamma: float, beta: float
                   ) -> np.ndarray:
    """Eq. 8 over one collapsed history; ranks are 1-based (0 = not in that channel). Returns indices."""
    def channel(rank, weight):
        return np.where((rank > 0) & (rank <= k), weight / np.maximum(rank, 1).astype(np.float64) ** beta, -1.0)

    s_emb = channel(sim_rank, gamma)
    s_time = channel(recency_rank, 1.0 - gamma)
    score = np.round(np.maximum(s_emb, s_time), 12)  # rounding: gamma/k and (1-gamma)/k' ties stay ties
    from_emb = s_emb >= s_time
    # Score descending; ties: embedding channel first, then the better rank in the winning channel.
    best_rank = np.where(from_emb, sim_rank, recency_rank)
    order = np.lexsort((best_rank, ~from_emb, -score))
    order = order[score[order] > 0]
    return order[:k]


def order_history(items: np.ndarray, ratings: np.ndarray, target: int, similarity: np.ndarray | None,
                  config: RetrievalConfig = RetrievalConfig()) -> tuple[np.ndarray, np.ndarray]:
    """The per-sample definition: ordered item indices and ratings for the prompt (at most K).

    items/ratings: the sample's history, oldest first. similarity: [len(items)] similarity of each history
    entry to the target, or [len(items), 2] text and colla similarities for Retri.-then-Mix (ignored by
    `simple`).
    """
    items = np.asarray(items)
    if similarity is None:
        if config.order != "simple":
            raise ValueError(f"order={config.order!r} needs similarities to the target")
        similarity = np.zeros(items.shape, np.float64)
    similarity = np.asarray(similarity, np.float64)
    if similarity.shape not in (items.shape, items.shape + (2,)):
        raise ValueError(f"similarity {similarity.shape} does not match history items {items.shape} "
                         f"(one score per item, or two for Retri.-then-Mix)")
    h_items, h_ratings, pos = collapse_history(items, ratings, target)
    sim = similarity[pos]  # [n] or [n, 2]
    n, k = h_items.size, config.k_history
    if sim.ndim == 2:
        sim = _retri_then_mix_walk(h_items, sim, k)
    by_sim = np.lexsort((h_items, -sim))  # similarity descending, ties by item index
    by_recency = np.arange(n)[::-1]  # most recent first
    if config.order == "simple":
        chosen = np.sort(by_recency[:k])
    elif config.order == "high":
        chosen = by_sim[:k]
    elif config.order == "sequential":
        chosen = np.sort(by_sim[:k])
    elif config.order == "rerank":
        sim_rank = np.zeros(n, np.int64)
        sim_rank[by_sim] = np.arange(1, n + 1)
        recency_rank = n - np.arange(n)
        chosen = _rerank_select(sim_rank, recency_rank, k, config.gamma, config.beta)
    else:
        chosen = _official_rerank(by_sim, n, k, config.official_variant)
    return h_items[chosen], h_ratings[chosen]


def _retri_then_mix_walk(h_items: np.ndarray, sim: np.ndarray, k: int) -> np.ndarray:
    """One collapsed history's Retri.-then-Mix ranking as scores ([n, 2] -> [n]; higher = earlier).

    As the official walk: the text ranking's first K1 items, then the colla ranking's items not taken yet
    (all of them, so that ranks past K exist too; only the first K are ever used)."""
    n = h_items.size
    k1, _ = retri_then_mix_split(k)
    by_text = np.lexsort((h_items, -sim[:, 0]))  # text similarity descending, ties by item index
    by_colla = np.lexsort((h_items, -sim[:, 1]))
    first = [int(i) for i in by_text[:k1]]
    taken = set(first)
    walk = first + [int(i) for i in by_colla if int(i) not in taken]
    scores = np.empty(n, np.float64)
    scores[walk] = -np.arange(n, dtype=np.float64)
    return scores


def _official_rerank(by_sim: np.ndarray, n: int, k: int, variant: str) -> np.ndarray:
    """The released code's rerank (spec 2.7 code block) on a collapsed history of length n."""
    relevant = by_sim[:k]
    if variant in ("amazon", "bx") and n <= k:
        return relevant
    k1 = int(2 * k // 3)
    k2 = k - k1
    if variant == "bx":
        first = list(relevant[:k1])
    else:
        first = list(np.sort(relevant)[::-1][:k1])  # position in history descending
    taken = set(first)
    recent = []
    for idx in range(n - 1, -1, -1):
        if len(recent) == k2:
            break
        if idx not in taken:
            recent.append(idx)
    if variant != "bx":
        recent = recent[::-1]
    return np.asarray(first + recent, np.int64)


# ----------------------------------------------------------------------------- batched


def pad_histories(histories: Sequence[np.ndarray], ratings: Sequence[np.ndarray], pad_item: int = -1
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Ragged histories -> [B, H] items (pad -1) and ratings (pad 0), oldest first."""
    if len(histories) != len(ratings):
        raise ValueError(f"{len(histories)} histories but {len(ratings)} rating lists")
    width = max((len(h) for h in histories), default=0)
    items = np.full((len(histories), max(width, 1)), pad_item, np.int64)
    rates = np.zeros((len(histories), max(width, 1)), np.float64)
    for b, (h, r) in enumerate(zip(histories, ratings)):
        if len(h) != len(r):
            raise ValueError(f"sample {b}: {len(h)} history items but {len(r)} ratings")
        items[b, : len(h)] = h
        rates[b, : len(r)] = r
    return items, rates


def retrieve_batch(items: np.ndarray, ratings: np.ndarray, targets: np.ndarray,
                   similarity: SimilarityFn | np.ndarray | None, config: RetrievalConfig = RetrievalConfig()
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised `order_history` for B samples.

    items [B, H] (oldest first, -1 = padding), ratings [B, H], targets [B]; similarity: a callable
    (targets [B], candidates [B, H]) -> [B, H] (or [B, H, 2] for Retri.-then-Mix), or those similarities
    themselves. Returns (items [B, K] with -1 padding, ratings [B, K], lengths [B]).
    """
    items = np.asarray(items, np.int64)
    ratings = np.asarray(ratings)
    targets = np.asarray(targets, np.int64)
    if items.ndim != 2 or items.shape != ratings.shape or targets.shape != (items.shape[0],):
        raise ValueError(f"items {items.shape}, ratings {ratings.shape} must be [B, H] and targets "
                         f"{targets.shape} [B]")
    b, h = items.shape
    k = config.k_history
    padding = items < 0
    if config.order == "simple":
        sim = np.zeros((b, h))
    elif similarity is None:
        raise ValueError(f"order={config.order!r} needs similarities to the target")
    elif callable(similarity):
        sim = np.asarray(similarity(targets, np.where(padding, 0, items)), np.float64)
    else:
        sim = np.asarray(similarity, np.float64)
    if sim.shape not in ((b, h), (b, h, 2)):
        raise ValueError(f"similarity has shape {sim.shape}, expected {(b, h)} (or {(b, h, 2)} for "
                         f"Retri.-then-Mix)")

    # Valid = not padding, not the target, last occurrence of its item in the row.
    order = np.lexsort((np.arange(h)[None, :].repeat(b, 0), items), axis=-1)  # by item, then position
    sorted_items = np.take_along_axis(items, order, 1)
    is_last_sorted = np.ones((b, h), bool)
    is_last_sorted[:, :-1] = sorted_items[:, :-1] != sorted_items[:, 1:]
    is_last = np.zeros((b, h), bool)
    np.put_along_axis(is_last, order, is_last_sorted, 1)
    valid = is_last & ~padding & (items != targets[:, None])
    n_valid = valid.sum(1)  # [B]

    if sim.ndim == 3:
        # Retri.-then-Mix: the composite rank is the text rank for the first K1 of the text ranking, else
        # K1 + the colla rank (colla order among the rest; ranks of taken items are skipped, not reused).
        k1, _ = retri_then_mix_split(k)
        _, text_rank = _ranks(sim[..., 0], items, valid)
        _, colla_rank = _ranks(sim[..., 1], items, valid)
        sim = np.where(valid, -np.where(text_rank <= k1, text_rank, k1 + colla_rank).astype(np.float64), 0.0)

    # Ranks (1-based; 0 for invalid). Recency: count of valid entries at or after this position.
    recency_rank = np.where(valid, np.cumsum(valid[:, ::-1], 1)[:, ::-1], 0)
    by_sim, sim_rank = _ranks(sim, items, valid)  # [B, H] each
    position = np.arange(h)[None, :]

    if config.order in ("simple", "sequential"):
        rank = recency_rank if config.order == "simple" else sim_rank
        take = valid & (rank <= k)
        key = np.where(take, position, h + position)  # chronological
        chosen = np.argsort(key, axis=1, kind="stable")[:, :k]
        counts = take.sum(1)
    elif config.order == "high":
        chosen = by_sim[:, :k]
        counts = np.minimum(n_valid, k)
    elif config.order == "rerank":
        def channel(rank, weight):
            return np.where((rank > 0) & (rank <= k), weight / np.maximum(rank, 1).astype(np.float64) ** config.beta,
                            -1.0)
        s_emb, s_time = channel(sim_rank, config.gamma), channel(recency_rank, 1.0 - config.gamma)
        score = np.round(np.maximum(s_emb, s_time), 12)
        from_emb = s_emb >= s_time
        best_rank = np.where(from_emb, sim_rank, recency_rank)
        chosen = np.lexsort((best_rank, ~from_emb, -score), axis=-1)[:, :k]
        counts = np.minimum((score > 0).sum(1), k)
    else:
        return _official_batch(items, ratings, by_sim, valid, n_valid, config)

    width = chosen.shape[1]
    out_items = np.take_along_axis(items, chosen, 1)
    out_ratings = np.take_along_axis(ratings, chosen, 1)
    filled = np.arange(width)[None, :] < counts[:, None]
    out_items = np.where(filled, out_items, -1)
    out_ratings = np.where(filled, out_ratings, 0)
    pad = k - width
    if pad > 0:
        out_items = np.pad(out_items, ((0, 0), (0, pad)), constant_values=-1)
        out_ratings = np.pad(out_ratings, ((0, 0), (0, pad)))
    return out_items, out_ratings, counts


def _ranks(sim: np.ndarray, items: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Similarity ranking of the valid entries of each row, ties by item index.

    sim, items, valid: [B, H]. Returns (order [B, H]: valid columns best first, then the invalid ones;
    rank [B, H]: 1-based rank among the valid entries, 0 for invalid ones)."""
    b, h = items.shape
    big = np.iinfo(np.int64).max
    order = np.lexsort((np.where(valid, items, big), np.where(valid, -sim, np.inf)), axis=-1)
    rank = np.zeros((b, h), np.int64)
    np.put_along_axis(rank, order, np.arange(1, h + 1)[None, :].repeat(b, 0), 1)
    return order, np.where(valid, rank, 0)


def _official_batch(items, ratings, by_sim, valid, n_valid, config):
    """official_rerank per row (its sequential scan does not vectorise usefully; rows are short)."""
    b = items.shape[0]
    k = config.k_history
    out_items = np.full((b, k), -1, np.int64)
    out_ratings = np.zeros((b, k), ratings.dtype)
    counts = np.zeros(b, np.int64)
    for r in range(b):
        cols = np.flatnonzero(valid[r])  # chronological columns of the collapsed history
        local = np.searchsorted(cols, by_sim[r, : n_valid[r]])  # similarity order as collapsed indices
        pick = cols[_official_rerank(local, cols.size, k, config.official_variant)]
        counts[r] = pick.size
        out_items[r, : pick.size] = items[r, pick]
        out_ratings[r, : pick.size] = ratings[r, pick]
    return out_items, out_ratings, counts


def retrieve_samples(histories: Sequence[np.ndarray], ratings: Sequence[np.ndarray], targets: Sequence[int],
                     similarity: SimilarityFn | None, config: RetrievalConfig = RetrievalConfig(),
                     chunk: int = 1024) -> list[tuple[np.ndarray, np.ndarray]]:
    """For a list of samples, the ordered (item indices, ratings) to put in each prompt."""
    if not (len(histories) == len(ratings) == len(targets)):
        raise ValueError(f"{len(histories)} histories, {len(ratings)} rating lists, {len(targets)} targets")
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, len(histories), chunk):
        items, rates = pad_histories(histories[start:start + chunk], ratings[start:start + chunk])
        got_items, got_ratings, counts = retrieve_batch(items, rates, np.asarray(targets[start:start + chunk]),
                                                        similarity, config)
        for row in range(len(counts)):
            n = counts[row]
            rating_dtype = np.asarray(ratings[start + row]).dtype
            out.append((got_items[row, :n].copy(), got_ratings[row, :n].astype(rating_dtype)))
    return out
