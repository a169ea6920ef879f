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

import json
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

    item_keys, item_idx = _inverse(item)
    user_keys, user_idx = _inverse(user)
    item_keys, item_idx = _renumber(item_keys, item_idx)
    user_keys, user_idx = _renumber(user_keys, user_idx)
    num_users = len(user_keys)

    # Position of each row within its user's sequence (rows are in global time order).
    by_user = np.argsort(user_idx, kind="stable")  # rows grouped by user, time order kept
    counts = np.bincount(user_idx, minlength=num_users)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    position = np.empty(len(user_idx), np.int64)
    position[by_user] = np.arange(len(user_idx)) - np.repeat(offsets[:-1], counts)

    sample_rows = np.flatnonzero(position >= min_history)  # global time order
    log.append((f"samples with history >= {min_history}", int(len(sample_rows))))
    n_train, n_valid, _ = _split_sizes(len(sample_rows), split_fractions)
    bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_valid),
              "test": (n_train + n_valid, len(sample_rows))}
    samples = {}
    for split, (a, b) in bounds.items():
        rows = sample_rows[a:b]
        samples[split] = {
            "user": user_idx[rows].astype(np.int32), "position": position[rows].astype(np.int32),
            "item": item_idx[rows].astype(np.int32), "rating": rating[rows].astype(np.int32),
            "label": (rating[rows] >= positive_min_rating).astype(np.int8), "timestamp": stamp[rows],
        }
    item_fields, user_fields = _tables(raw, item_keys, user_keys)
    options = dict(kind="temporal", positive_min_rating=positive_min_rating, min_history=min_history,
                   user_core=user_core, item_core=item_core, top_items=top_items,
                   drop_items_without=drop_items_without, split_fractions=list(split_fractions))
    return CTRData(
        name=raw.name, item_ids=item_keys, item_fields=item_fields, user_ids=user_keys, user_fields=user_fields,
        seq_offsets=offsets, seq_item=item_idx[by_user].astype(np.int32),
        seq_rating=rating[by_user].astype(np.int32), seq_timestamp=stamp[by_user].astype(np.int64),
        samples=samples, has_timestamps=True, options=options, filter_log=log, skipped=dict(raw.skipped),
        accounting=dict(raw.accounting))


def _renumber(keys: np.ndarray, inv: np.ndarray):
    """Indices in the order of the ids' natural sort (numeric for MovieLens)."""
    order = np.argsort(_id_sort_key(keys), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return keys[order], rank[inv]


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
    user_keys, user_inv = _renumber(*_inverse(user))
    counts = np.bincount(user_inv, minlength=len(user_keys))
    keep = counts[user_inv] >= min_user_ratings
    user, item, rating = user[keep], item[keep], rating[keep]
    log.append((f"users with >= {min_user_ratings} ratings", int(keep.sum())))
    if len(user) == 0:
        raise ValueError(f"{raw.name}: no ratings left after the filters {log}")

    item_keys, item_idx = _renumber(*_inverse(item))
    user_keys, user_idx = _renumber(*_inverse(user))
    # Per user, in ascending user id order, shuffle the user's (book, rating) list with one RNG
    # seeded once, as the notebook's set_seed(42) + random.shuffle loop.
    rng = random.Random(seed)
    by_user = np.argsort(user_idx, kind="stable")
    counts = np.bincount(user_idx, minlength=len(user_keys))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    seq_rows = np.empty(len(user_idx), np.int64)
    for u in range(len(user_keys)):
        rows = by_user[offsets[u]:offsets[u + 1]].tolist()
        rng.shuffle(rows)
        seq_rows[offsets[u]:offsets[u + 1]] = rows
    seq_item = item_idx[seq_rows].astype(np.int32)
    seq_rating = rating[seq_rows].astype(np.int32)

    shuffled = list(range(len(user_keys)))
    rng.shuffle(shuffled)
    sample_users = np.array(shuffled, np.int64)
    n_test = int(round(len(sample_users) * test_fraction))
    n_trainval = len(sample_users) - n_test
    n_valid = int(round(n_trainval * valid_fraction))
    bounds = {"train": (0, n_trainval - n_valid), "validation": (n_trainval - n_valid, n_trainval),
              "test": (n_trainval, len(sample_users))}
    samples = {}
    for split, (a, b) in bounds.items():
        users = sample_users[a:b]
        last = offsets[users + 1] - 1
        samples[split] = {
            "user": users.astype(np.int32), "position": (counts[users] - 1).astype(np.int32),
            "item": seq_item[last], "rating": seq_rating[last],
            "label": (seq_rating[last] >= positive_min_rating).astype(np.int8),
            "timestamp": np.zeros(len(users), np.int64),
        }
    log.append(("samples (one per user)", len(sample_users)))
    item_fields, user_fields = _tables(raw, item_keys, user_keys)
    options = dict(kind="bookcrossing", positive_min_rating=positive_min_rating,
                   item_selection_core=item_selection_core, min_user_ratings=min_user_ratings, seed=seed,
                   test_fraction=test_fraction, valid_fraction=valid_fraction)
    return CTRData(
        name=raw.name, item_ids=item_keys, item_fields=item_fields, user_ids=user_keys, user_fields=user_fields,
        seq_offsets=offsets, seq_item=seq_item, seq_rating=seq_rating,
        seq_timestamp=np.zeros(len(seq_item), np.int64), samples=samples, has_timestamps=False,
        options=options, filter_log=log, skipped=dict(raw.skipped),
        accounting=dict(raw.accounting))
