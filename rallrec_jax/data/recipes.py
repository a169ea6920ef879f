"""The spec's preprocessing recipes (paper-spec section 1): raw interactions -> a `CTRData` store with splits.

Two families, as the official notebooks:
- temporal (MovieLens, Amazon): optional iterative k-core and top-N item filters, a global sort by
  (timestamp, user, item), history = the user's earlier rows, rows with short histories dropped,
  global 8:1:1 split in time (train / validation / test).
- Book-Crossing: no timestamps; each user's list shuffled (seed 42), the last element is the target,
  samples shuffled and split 90/10; validation carved from train (the official code had none and
  selected checkpoints on test).
"""
from __future__ import annotations

import dataclasses
import random

import numpy as np

from rallrec_jax.data.ctr import CTRData
from rallrec_jax.data.readers.raw import RawDataset


# --------------------------------------------------------------------------------------------------
# Filters


def _id_sort_key(ids: np.ndarray) -> np.ndarray:
    """Official ids sort as numbers where they all are numbers (MovieLens), else as strings."""
    if all(s.isdigit() for s in np.unique(ids)):
        return ids.astype(np.int64)
    return ids


def _inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, inv = np.unique(values, return_inverse=True)
    return uniq, inv.reshape(-1)


def iterative_core(user: np.ndarray, item: np.ndarray, user_min: int, user_max: int | None, item_min: int,
                   item_max: int | None) -> np.ndarray:
    """Mask of interactions that survive repeatedly dropping users/items whose counts fall outside
    [min, max] until nothing changes (the official '10-core' with caps)."""
    keep = np.ones(len(user), bool)
    while True:
        _, uinv = _inverse(user[keep])
        _, iinv = _inverse(item[keep])
        ucount = np.bincount(uinv)[uinv]
        icount = np.bincount(iinv)[iinv]
        ok = (ucount >= user_min) & (icount >= item_min)
        if user_max is not None:
            ok &= ucount <= user_max
        if item_max is not None:
            ok &= icount <= item_max
        if ok.all():
            return keep
        idx = np.flatnonzero(keep)
        keep[idx[~ok]] = False
        if not keep.any():
            return keep


def _tables(raw: RawDataset, item_keys: np.ndarray, user_keys: np.ndarray):
    item_fields: dict[str, list[str]] = {}
    for key in item_keys:
        for f, v in raw.item_fields.get(key, {}).items():
            item_fields.setdefault(f, []).append(v)
    user_fields: dict[str, list[str]] = {}
    for key in user_keys:
        for f, v in raw.user_fields.get(key, {}).items():
            user_fields.setdefault(f, []).append(v)
    for fields, n, kind in ((item_fields, len(item_keys), "item"), (user_fields, len(user_keys), "user")):
        for f, values in fields.items():
            if len(values) != n:
                raise ValueError(f"{raw.name}: {kind} field {f!r} present for {len(values)} of {n} {kind}s")
    return ({f: np.array(v) for f, v in item_fields.items()}, {f: np.array(v) for f, v in user_fields.items()})


def _split_sizes(n: int, fractions) -> tuple[int, int, int]:
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions {fractions} must be three numbers summing to 1")
    n_train = int(n * fractions[0])
    n_valid = int(n * fractions[1])
    return n_train, n_valid, n - n_train - n_valid


def _indexed(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct ids in their natural sort, each row's index into them)."""
    return _renumber(*_inverse(ids))


def _renumber(keys: np.ndarray, inv: np.ndarray):
    """Indices in the order of the ids' natural sort (numeric for MovieLens)."""
    order = np.argsort(_id_sort_key(keys), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return keys[order], rank[inv]


# --------------------------------------------------------------------------------------------------
# Per-user sequences: what both recipes cut samples from


@dataclasses.dataclass(frozen=True)
class UserSequences:
    """Every user's interactions as one sequence, users in index order.

    `rows` [E]: interaction rows in sequence order (user 0's sequence, then user 1's, ...); `offsets` [U+1]:
    where each user's sequence starts in `rows`; `counts` [U]: its length; `position` [E]: each row's place in
    its user's sequence (indexed by row)."""
    rows: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray
    position: np.ndarray

    def last_rows(self, users: np.ndarray) -> np.ndarray:
        """The row that ends each of `users`' sequences (the Book-Crossing target)."""
        return self.rows[self.offsets[users + 1] - 1]


def user_sequences(user_idx: np.ndarray, num_users: int, shuffle: random.Random | None = None) -> UserSequences:
    """Rows grouped by user, each user's rows kept in their given order (the temporal recipe passes them in
    time order); with `shuffle`, each user's rows are shuffled by that one RNG, users in index order, as the
    Book-Crossing notebook's set_seed(42) + random.shuffle loop."""
    rows = np.argsort(user_idx, kind="stable")
    counts = np.bincount(user_idx, minlength=num_users)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if shuffle is not None:
        for u in range(num_users):
            mine = rows[offsets[u]:offsets[u + 1]].tolist()
            shuffle.shuffle(mine)
            rows[offsets[u]:offsets[u + 1]] = mine
    position = np.empty(len(user_idx), np.int64)
    position[rows] = np.arange(len(user_idx)) - np.repeat(offsets[:-1], counts)
    return UserSequences(rows, offsets, counts, position)


def _samples(rows: np.ndarray, user_idx: np.ndarray, item_idx: np.ndarray, rating: np.ndarray, stamp: np.ndarray,
             seq: UserSequences, positive_min_rating: int) -> dict[str, np.ndarray]:
    """The CTR samples whose targets are `rows`: user, position in the user's sequence, item, rating, label
    (rating >= positive_min_rating) and timestamp. The history of a sample is its sequence before `position`."""
    return {"user": user_idx[rows].astype(np.int32), "position": seq.position[rows].astype(np.int32),
            "item": item_idx[rows].astype(np.int32), "rating": rating[rows].astype(np.int32),
            "label": (rating[rows] >= positive_min_rating).astype(np.int8), "timestamp": stamp[rows]}


def _store(raw: RawDataset, keys: tuple[np.ndarray, np.ndarray], item_idx: np.ndarray, rating: np.ndarray,
           stamp: np.ndarray, seq: UserSequences, samples: dict, options: dict, log: list,
           has_timestamps: bool) -> CTRData:
    """The CTRData of a recipe: (item keys, user keys), their text tables, and the users' sequences."""
    item_keys, user_keys = keys
    item_fields, user_fields = _tables(raw, item_keys, user_keys)
    return CTRData(
        name=raw.name, item_ids=item_keys, item_fields=item_fields, user_ids=user_keys, user_fields=user_fields,
        seq_offsets=seq.offsets, seq_item=item_idx[seq.rows].astype(np.int32),
        seq_rating=rating[seq.rows].astype(np.int32), seq_timestamp=stamp[seq.rows].astype(np.int64),
        samples=samples, has_timestamps=has_timestamps, options=options, filter_log=log, skipped=dict(raw.skipped),
        accounting=dict(raw.accounting))


# --------------------------------------------------------------------------------------------------
# Temporal data sets: MovieLens and Amazon


def preprocess_temporal(
    raw: RawDataset,
    *,
    positive_min_rating: int = 4,
    min_history: int = 5,
    user_core: tuple[int, int | None] | None = None,
    item_core: tuple[int, int | None] | None = None,
    top_items: int | None = None,
    drop_items_without: str | None = None,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> CTRData:
    """Spec 1.2 (MovieLens) and 1.4 (Amazon). Label: rating >= positive_min_rating (4 means > 3).

    `drop_items_without`: an item field whose 'unknown' (or missing metadata) drops the item's rows
    (Amazon: "category"). `user_core`/`item_core`: (min, max) counts for the iterative core filter;
    `top_items`: keep the N most frequent items after it.
    """
    if raw.timestamp is None:
        raise ValueError(f"{raw.name}: temporal preprocessing needs timestamps")
    log = [("read", raw.num_interactions)]
    user, item, rating, stamp = raw.user, raw.item, raw.rating, raw.timestamp
    if drop_items_without:
        ok = np.array([raw.item_fields.get(i, {}).get(drop_items_without, "unknown") != "unknown" for i in item])
        user, item, rating, stamp = user[ok], item[ok], rating[ok], stamp[ok]
        log.append((f"drop items without metadata or with unknown {drop_items_without}", int(ok.sum())))
    if user_core or item_core:
        umin, umax = user_core or (0, None)
        imin, imax = item_core or (0, None)
        ok = iterative_core(user, item, umin, umax, imin, imax)
        user, item, rating, stamp = user[ok], item[ok], rating[ok], stamp[ok]
        log.append((f"iterative core users {umin}..{umax} items {imin}..{imax}", int(ok.sum())))
    if top_items:
        uniq, inv = _inverse(item)
        counts = np.bincount(inv)
        # Most frequent first; ties broken by first appearance in the file, as a stable pandas sort.
        first_seen = np.full(len(uniq), len(inv))
        np.minimum.at(first_seen, inv, np.arange(len(inv)))
        order = np.lexsort((first_seen, -counts))[:top_items]
        keep_items = np.zeros(len(uniq), bool)
        keep_items[order] = True
        ok = keep_items[inv]
        user, item, rating, stamp = user[ok], item[ok], rating[ok], stamp[ok]
        log.append((f"top {top_items} items", int(ok.sum())))
    if len(user) == 0:
        raise ValueError(f"{raw.name}: no interactions left after the filters {log}")

    # Global sort by (timestamp, user, item), stable.
    order = np.lexsort((_id_sort_key(item), _id_sort_key(user), stamp), axis=-1)
    user, item, rating, stamp = user[order], item[order], rating[order], stamp[order]

    item_keys, item_idx = _indexed(item)
    user_keys, user_idx = _indexed(user)
    seq = user_sequences(user_idx, len(user_keys))  # rows are in global time order: so is each sequence

    sample_rows = np.flatnonzero(seq.position >= min_history)  # global time order
    log.append((f"samples with history >= {min_history}", int(len(sample_rows))))
    n_train, n_valid, _ = _split_sizes(len(sample_rows), split_fractions)
    bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_valid),
              "test": (n_train + n_valid, len(sample_rows))}
    samples = {split: _samples(sample_rows[a:b], user_idx, item_idx, rating, stamp, seq, positive_min_rating)
               for split, (a, b) in bounds.items()}
    options = dict(kind="temporal", positive_min_rating=positive_min_rating, min_history=min_history,
                   user_core=user_core, item_core=item_core, top_items=top_items,
                   drop_items_without=drop_items_without, split_fractions=list(split_fractions))
    return _store(raw, (item_keys, user_keys), item_idx, rating, stamp, seq, samples, options, log,
                  has_timestamps=True)


# --------------------------------------------------------------------------------------------------
# Book-Crossing


def preprocess_bookcrossing(
    raw: RawDataset,
    *,
    positive_min_rating: int = 5,
    item_selection_core: tuple[int, int | None, int] | None = (11, 200, 10),
    min_user_ratings: int = 5,
    seed: int = 42,
    test_fraction: float = 0.1,
    valid_fraction: float = 0.1,
) -> CTRData:
    """Spec 1.3. The official item set (3,547 ISBNs) came from an earlier filter whose output was a
    file, `isbn2id.json`; it is rebuilt here as that filter: iterate users with user_min..user_max
    ratings and books with >= item_min ratings until stable (`item_selection_core`), and keep those
    books. Then users with >= min_user_ratings ratings on them; one sample per user (its shuffled
    list's last element is the target); samples shuffled and split 90/10; validation is the last
    `valid_fraction` of train. Label: rating >= 5 (implicit 0 ratings, when present, are negatives).
    """
    log = [("read", raw.num_interactions)]
    user, item, rating = raw.user, raw.item, raw.rating
    if item_selection_core:
        umin, umax, imin = item_selection_core
        ok = iterative_core(user, item, umin, umax, imin, None)
        books = set(item[ok].tolist())
        log.append((f"item selection: core users {umin}..{umax}, books >= {imin} -> {len(books)} books",
                    int(ok.sum())))
        keep = np.fromiter((i in books for i in item), bool, len(item))
        user, item, rating = user[keep], item[keep], rating[keep]
        log.append(("ratings on the selected books", int(keep.sum())))
    user_keys, user_inv = _indexed(user)
    counts = np.bincount(user_inv, minlength=len(user_keys))
    keep = counts[user_inv] >= min_user_ratings
    user, item, rating = user[keep], item[keep], rating[keep]
    log.append((f"users with >= {min_user_ratings} ratings", int(keep.sum())))
    if len(user) == 0:
        raise ValueError(f"{raw.name}: no ratings left after the filters {log}")

    item_keys, item_idx = _indexed(item)
    user_keys, user_idx = _indexed(user)
    stamp = np.zeros(len(user), np.int64)  # the dump has no time
    # Per user, in ascending user id order, the user's (book, rating) list shuffled with one RNG seeded once;
    # the same RNG then shuffles the samples.
    rng = random.Random(seed)
    seq = user_sequences(user_idx, len(user_keys), shuffle=rng)

    shuffled = list(range(len(user_keys)))
    rng.shuffle(shuffled)
    sample_users = np.array(shuffled, np.int64)
    n_test = int(round(len(sample_users) * test_fraction))
    n_trainval = len(sample_users) - n_test
    n_valid = int(round(n_trainval * valid_fraction))
    bounds = {"train": (0, n_trainval - n_valid), "validation": (n_trainval - n_valid, n_trainval),
              "test": (n_trainval, len(sample_users))}
    # One sample per user: the last element of the user's shuffled list is the target.
    samples = {split: _samples(seq.last_rows(sample_users[a:b]), user_idx, item_idx, rating, stamp, seq,
                               positive_min_rating) for split, (a, b) in bounds.items()}
    log.append(("samples (one per user)", len(sample_users)))
    options = dict(kind="bookcrossing", positive_min_rating=positive_min_rating,
                   item_selection_core=item_selection_core, min_user_ratings=min_user_ratings, seed=seed,
                   test_fraction=test_fraction, valid_fraction=valid_fraction)
    return _store(raw, (item_keys, user_keys), item_idx, rating, stamp, seq, samples, options, log,
                  has_timestamps=False)
