"""What every reader returns: `RawDataset` (one data set as read, before any preprocessing), and the row
accounting (`Tally`) that shows, per file, how many rows were kept and why each other one was not."""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np


@dataclasses.dataclass
class RawDataset:
    """One data set as read from its official files, before any preprocessing.

    `timestamp` is None for Book-Crossing (the dump has none). `item_fields` and `user_fields`
    map an official id to its text fields (title, genre, ... / gender, age, job, ...).
    `skipped` counts rows dropped by the reader, keyed by reason; empty for clean formats.
    """

    name: str
    user: np.ndarray  # [E] str, official user ids
    item: np.ndarray  # [E] str, official item ids
    rating: np.ndarray  # [E] int32
    timestamp: np.ndarray | None  # [E] int64 seconds, or None
    item_fields: dict[str, dict[str, str]]
    user_fields: dict[str, dict[str, str]]
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    # table -> {"file", "rows", "kept", "skipped": {reason: n}, "noted": {reason: n}} (see `Tally`); the
    # interactions are the table "ratings".
    accounting: dict[str, dict] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        n = len(self.user)
        lengths = {len(self.item), len(self.rating)} | ({len(self.timestamp)} if self.timestamp is not None else set())
        if lengths != {n}:
            raise ValueError(f"{self.name}: interaction arrays differ in length: {n}, {lengths}")
        for table, a in self.accounting.items():
            if a["kept"] + sum(a["skipped"].values()) != a["rows"]:
                raise AssertionError(f"{self.name} reader: {a['file']} has {a['rows']} rows but {a['kept']} kept and "
                                     f"{a['skipped']} skipped")
        if "ratings" in self.accounting and self.accounting["ratings"]["kept"] != n:
            raise AssertionError(f"{self.name} reader: {self.accounting['ratings']['kept']} ratings counted as kept, "
                                 f"{n} returned")

    @property
    def num_interactions(self) -> int:
        return len(self.user)


class Tally:
    """The rows of one table (file): each is kept, skipped for a reason, and possibly kept with a note (a fix
    applied, a duplicate left as the official code leaves it). `report(kept)` checks kept + skipped = rows."""

    def __init__(self, table: str, path: pathlib.Path):
        self.table, self.path, self.rows = table, path, 0
        self.skipped: dict[str, int] = {}
        self.noted: dict[str, int] = {}

    def row(self) -> None:
        self.rows += 1

    def skip(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[reason] = self.skipped.get(reason, 0) + count

    def note(self, reason: str, count: int = 1) -> None:
        if count:
            self.noted[reason] = self.noted.get(reason, 0) + count

    def report(self, kept: int) -> dict:
        if kept + sum(self.skipped.values()) != self.rows:
            raise AssertionError(f"{self.path}: {self.rows} rows read, but {kept} kept and {self.skipped} skipped")
        return {"file": str(self.path), "rows": self.rows, "kept": kept, "skipped": dict(self.skipped),
                "noted": dict(self.noted)}


def flat_skipped(accounting: dict[str, dict]) -> dict[str, int]:
    """`RawDataset.skipped`: every skip and note of every table as "table: reason" -> count."""
    out = {}
    for table, a in accounting.items():
        for kind in ("skipped", "noted"):
            out.update({f"{table}: {reason}": n for reason, n in a[kind].items()})
    return out
