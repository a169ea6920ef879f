"""Categorical ID fields of the CTR samples, for the ID-based baselines (DeepFM).

Fields: user, item, every user profile field, and the item's categorical text fields (genre,
category; Book-Crossing: author, year, publisher). Vocabularies are built from the training split;
index 0 of every field is reserved for values never seen in training, and how many validation/test
rows hit it is reported, so nothing is hidden.
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


def _raw_columns(data: CTRData, split: str) -> dict[str, np.ndarray]:
    s = data.samples[split]
    cols = {"user": data.user_ids[s["user"]], "item": data.item_ids[s["item"]]}
    for name, values in data.user_fields.items():
        cols[f"user_{name}"] = values[s["user"]]
    for name in ITEM_CATEGORICAL:
        if name in data.item_fields:
            cols[f"item_{name}"] = data.item_fields[name][s["item"]]
    return cols


def categorical_fields(data: CTRData) -> FieldTable:
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
    return FieldTable(names, [len(vocabs[n]) + 1 for n in names], fields, labels, unseen)
