"""Categorical ID fields of the CTR samples, for the ID-based baselines (DeepFM).

Fields: user, item, every user profile field, and the item's categorical text fields (genre,
category; Book-Crossing: author, year, publisher). Vocabularies are built from the training split;
index 0 of every field is reserved for values never seen in training, and how many validation/test
rows hit it is reported, so nothing is hidden.

Optionally (`history_k` > 0) one behaviour field: the mean rating of the row's K most recent history items
(what the `simple` prompt shows the LLM), in quarter-rating buckets. A user's ID embedding is fixed when
training ends, and users first seen after it have none; the recent ratings reach up to the target's time.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from rallrec_jax.data.ctr import SPLITS, CTRData

ITEM_CATEGORICAL = ("genre", "category", "author", "year", "publisher")


@dataclasses.dataclass
class FieldTable:
    names: list[str]
    cardinalities: list[int]  # including the reserved 0
    fields: dict[str, np.ndarray]  # split -> [N, F] int32
    labels: dict[str, np.ndarray]  # split -> [N] int8
    unseen: dict[str, dict[str, int]]  # split -> field -> rows whose value was unseen in training


def recent_mean_rating(data: CTRData, split: str, rows, k: int, fallback: float) -> np.ndarray:
    """[n] mean rating of each row's K most recent history items (data/histories.recent_history's items);
    `fallback` for a row without history. Vectorised over the users' rating sequences."""
    if k < 1:
        raise ValueError(f"k_history={k} must be >= 1")
    rows = np.asarray(rows, np.int64)
    s = data.samples[split]
    start = data.seq_offsets[s["user"][rows]].astype(np.int64)  # [n] the user's sequence start
    pos = s["position"][rows].astype(np.int64)  # [n] history length
    shown = np.minimum(pos, k)
    csum = np.concatenate([[0], np.cumsum(data.seq_rating, dtype=np.int64)])  # [T + 1]
    total = csum[start + pos] - csum[start + pos - shown]
    return np.where(shown > 0, total / np.maximum(shown, 1), fallback)


def _raw_columns(data: CTRData, split: str) -> dict[str, np.ndarray]:
    s = data.samples[split]
    cols = {"user": data.user_ids[s["user"]], "item": data.item_ids[s["item"]]}
    for name, values in data.user_fields.items():
        cols[f"user_{name}"] = values[s["user"]]
    for name in ITEM_CATEGORICAL:
        if name in data.item_fields:
            cols[f"item_{name}"] = data.item_fields[name][s["item"]]
    return cols


def categorical_fields(data: CTRData, history_k: int = 0) -> FieldTable:
    """The ID fields of every split (module docstring); `history_k` > 0 adds the recent-rating field."""
    train_cols = _raw_columns(data, "train")
    names = list(train_cols)
    vocabs = {n: {v: k + 1 for k, v in enumerate(np.unique(train_cols[n]).tolist())} for n in names}
    fields, labels, unseen = {}, {}, {}
    for split in SPLITS:
        cols = train_cols if split == "train" else _raw_columns(data, split)
        encoded = np.zeros((data.num_samples(split), len(names)), np.int32)
        unseen[split] = {}
        for f, n in enumerate(names):
            vocab = vocabs[n]
            encoded[:, f] = [vocab.get(v, 0) for v in cols[n].tolist()]
            unseen[split][n] = int((encoded[:, f] == 0).sum())
        fields[split] = encoded
        labels[split] = data.samples[split]["label"]
    cards = [len(vocabs[n]) + 1 for n in names]
    if history_k:
        lo, hi = int(data.seq_rating.min()), int(data.seq_rating.max())
        _, _, t_ratings = data.training_interactions()
        fallback = float(t_ratings.mean()) if t_ratings.size else float(lo)
        for split in SPLITS:
            mean = recent_mean_rating(data, split, np.arange(data.num_samples(split)), history_k, fallback)
            bucket = np.clip(np.round((mean - lo) * 4), 0, 4 * (hi - lo)).astype(np.int32) + 1  # 0 stays "unseen"
            fields[split] = np.concatenate([fields[split], bucket[:, None]], axis=1)
            unseen[split][f"recent_rating@{history_k}"] = 0
        names.append(f"recent_rating@{history_k}")
        cards.append(4 * (hi - lo) + 2)
    return FieldTable(names, cards, fields, labels, unseen)
