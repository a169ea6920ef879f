"""Per-row predictions as one CSV beside the `.npy` files: what a user opens in pandas or a spreadsheet to look
at single rows (which users a model gets wrong, how two table rows differ on the same row).

`<workdir>/evaluate/predictions.csv` has one line per evaluation-sample row, in sample order:

    row_id, user_id, item_id, label, <tag>, <tag>, ...

`row_id` is the row's index in its split, `user_id` / `item_id` the data set's official ids, `label` the 0/1
click label, then one column of P(like) per table row named by its evaluation tag (the stem of its
`evaluate/<tag>.npy`). A table row scored on a prefix of the sample (`pipeline.retrieval_eval_size`) has empty
cells beyond that prefix. Probabilities are written with `repr(float)`, which reads back to the same float64.
"""
from __future__ import annotations

import csv
import io
import os
import pathlib
from collections.abc import Mapping

import numpy as np

from rallrec_jax import artifacts

FILENAME = "predictions.csv"
ID_COLUMNS = ("row_id", "user_id", "item_id", "label")


def predictions_csv(row_ids: np.ndarray, user_ids: np.ndarray, item_ids: np.ndarray, labels: np.ndarray,
                    columns: Mapping[str, np.ndarray]) -> str:
    """The CSV text. row_ids, user_ids, item_ids, labels: [N]; columns: name -> [n <= N] P of the first n rows."""
    n = len(row_ids)
    for name, values in (("user_ids", user_ids), ("item_ids", item_ids), ("labels", labels)):
        if len(values) != n:
            raise ValueError(f"predictions: {name} has {len(values)} entries for {n} rows")
    clash = sorted(set(columns) & set(ID_COLUMNS))
    if clash:
        raise ValueError(f"predictions: probability columns {clash} clash with the id columns {ID_COLUMNS}")
    cols = {name: np.asarray(p, np.float64).reshape(-1) for name, p in columns.items()}
    for name, p in cols.items():
        if len(p) > n:
            raise ValueError(f"predictions: column {name!r} has {len(p)} probabilities for {n} sample rows")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*ID_COLUMNS, *cols])
    for i in range(n):
        writer.writerow([int(row_ids[i]), str(user_ids[i]), str(item_ids[i]), int(labels[i])]
                        + [repr(float(p[i])) if i < len(p) else "" for p in cols.values()])
    return buf.getvalue()


def write_predictions(path: str | os.PathLike, data, split: str, row_ids: np.ndarray,
                      columns: Mapping[str, np.ndarray]) -> pathlib.Path:
    """Writes `path` atomically for rows `row_ids` [N] of `split` of `data` (a CTRData: its official user and
    item ids and its labels); `columns` as in `predictions_csv`. Returns the path."""
    rows = np.asarray(row_ids, np.int64)
    samples = data.samples[split]
    users = np.asarray(data.user_ids)[np.asarray(samples["user"])[rows]]
    items = np.asarray(data.item_ids)[np.asarray(samples["item"])[rows]]
    labels = np.asarray(samples["label"])[rows]
    return artifacts.atomic_write_text(path, predictions_csv(rows, users, items, labels, columns))
