"""The CTR sample store (paper-spec section 1): `CTRData`, its samples, splits and statistics.

Storage is compact: each user's interactions are one sequence (CSR: `seq_offsets`), in history order,
and a sample is (user, position): its target is the user's interaction at `position` and its history
the `position` interactions before it. Histories are therefore never copied, whatever their length
(MovieLens-1M histories run to thousands), and "history holds only earlier interactions" holds by
construction. The preprocessing recipes that build it from raw interactions are in data/recipes.py.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping

import numpy as np

from rallrec_jax import artifacts

SPLITS = ("train", "validation", "test")
SAMPLE_KEYS = ("user", "position", "item", "rating", "label", "timestamp")


@dataclasses.dataclass
class CTRData:
    """CTR samples of one data set, with the item and user tables they index into."""

    name: str
    item_ids: np.ndarray  # [I] str, official ids; index = item index
    item_fields: dict[str, np.ndarray]  # field -> [I] str
    user_ids: np.ndarray  # [U] str
    user_fields: dict[str, np.ndarray]  # field -> [U] str
    seq_offsets: np.ndarray  # [U + 1] int64; user u's sequence is [offsets[u], offsets[u + 1])
    seq_item: np.ndarray  # [T] int32 item index
    seq_rating: np.ndarray  # [T] int32
    seq_timestamp: np.ndarray  # [T] int64 (all zero when the data set has none)
    samples: dict[str, dict[str, np.ndarray]]  # split -> SAMPLE_KEYS -> [N]
    has_timestamps: bool
    options: dict  # the preprocessing options that made this (for fingerprints)
    filter_log: list  # [(step, rows or samples after it)]
    skipped: dict[str, int]  # rows the reader skipped or kept with a fix, by reason
    accounting: dict[str, dict] = dataclasses.field(default_factory=dict)  # per read file (readers/raw.py: Tally)

    # ---- access -------------------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    def num_samples(self, split: str) -> int:
        return len(self.samples[split]["user"])

    def history(self, split: str, index: int) -> dict[str, np.ndarray]:
        """The sample's history, oldest first (BX: in the shuffled order): items, ratings, timestamps."""
        user = int(self.samples[split]["user"][index])
        start = int(self.seq_offsets[user])
        stop = start + int(self.samples[split]["position"][index])
        return {"item": self.seq_item[start:stop], "rating": self.seq_rating[start:stop],
                "timestamp": self.seq_timestamp[start:stop]}

    def history_lengths(self, split: str) -> np.ndarray:
        return self.samples[split]["position"]

    def training_interactions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user, item, rating) of every interaction a training sample sees (as target or in its
        history): the graph LightGCN may learn from without looking into validation or test time."""
        train = self.samples["train"]
        reach = np.zeros(self.num_users, np.int64)
        np.maximum.at(reach, train["user"], train["position"].astype(np.int64) + 1)
        return self._prefix_interactions(reach)

    def _prefix_interactions(self, lengths: np.ndarray):
        users = np.repeat(np.arange(self.num_users, dtype=np.int32), lengths)
        starts = np.repeat(self.seq_offsets[:-1], lengths)
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        index = starts + within
        return users, self.seq_item[index], self.seq_rating[index]

    def official_graph_interactions(self, min_ratings: int, require_repeated_item: bool):
        """The official LightGCN `train.txt`: every interaction except, for each user with more than
        `min_ratings`, the last one (ML-1M: only if that item occurs more than once). It includes
        test-period interactions (spec 1.2 and bug 8); offered to reproduce the official numbers."""
        lengths = np.diff(self.seq_offsets)
        last = self.seq_item[self.seq_offsets[1:] - 1]
        drop = lengths > min_ratings
        if require_repeated_item:
            counts = np.bincount(self.seq_item, minlength=self.num_items)
            drop &= counts[last] > 1
        return self._prefix_interactions(lengths - drop.astype(np.int64))

    # ---- statistics -----------------------------------------------------------------------------
    def statistics(self) -> dict:
        stats = {"name": self.name, "users": self.num_users, "items": self.num_items,
                 "interactions": int(len(self.seq_item)), "splits": {}}
        for split in SPLITS:
            s = self.samples[split]
            n = len(s["user"])
            hist = s["position"]
            stats["splits"][split] = {
                "samples": n,
                "users": int(len(np.unique(s["user"]))),
                "positive_rate": float(s["label"].mean()) if n else float("nan"),
                "history_length": {
                    "mean": float(hist.mean()) if n else 0.0,
                    "median": float(np.median(hist)) if n else 0.0,
                    "min": int(hist.min()) if n else 0,
                    "max": int(hist.max()) if n else 0,
                },
            }
        stats["samples"] = sum(v["samples"] for v in stats["splits"].values())
        stats["filter_log"] = [list(step) for step in self.filter_log]
        stats["skipped"] = dict(self.skipped)
        stats["accounting"] = dict(self.accounting)  # per file: rows = kept + each skip reason
        return stats

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {"seq_offsets": self.seq_offsets, "seq_item": self.seq_item, "seq_rating": self.seq_rating,
                  "seq_timestamp": self.seq_timestamp, "item_ids": self.item_ids, "user_ids": self.user_ids}
        arrays.update({f"item_field/{k}": v for k, v in self.item_fields.items()})
        arrays.update({f"user_field/{k}": v for k, v in self.user_fields.items()})
        for split, cols in self.samples.items():
            arrays.update({f"samples/{split}/{k}": v for k, v in cols.items()})
        return arrays

    def fingerprint(self) -> str:
        """The name, the options and the content (every array): what the retrieval caches are keyed by, so a
        data set prepared again from a fixed file gets new item texts, embeddings and histories."""
        if getattr(self, "_content", None) is None:
            self._content = {k: artifacts.array_fingerprint(v) for k, v in sorted(self._arrays().items())}
        return artifacts.fingerprint({"name": self.name, "options": self.options, "content": self._content})

    # ---- persistence (atomic: a folder is written whole, then renamed into place) -----------------
    def save(self, directory: str | os.PathLike) -> pathlib.Path:
        directory = pathlib.Path(directory).resolve()
        with artifacts.staging_dir(directory) as tmp:
            artifacts.atomic_save_npz(tmp / "ctr.npz", **self._arrays())
            meta = {"name": self.name, "has_timestamps": self.has_timestamps, "options": self.options,
                    "filter_log": self.filter_log, "skipped": self.skipped, "accounting": self.accounting,
                    "fingerprint": self.fingerprint(), "statistics": self.statistics()}
            artifacts.atomic_write_json(tmp / "meta.json", meta)
            return artifacts.publish_dir(tmp, directory, replace=True)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> CTRData:
        directory = pathlib.Path(directory)
        for name in ("ctr.npz", "meta.json"):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name}: missing; run experiments/prepare_data.py first")
        try:
            meta = json.loads((directory / "meta.json").read_text())
            with np.load(directory / "ctr.npz", allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{directory}: corrupt prepared data set ({exc}); delete it and prepare again") from exc
        samples: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
        for key, value in arrays.items():
            if key.startswith("samples/"):
                _, split, col = key.split("/")
                samples[split][col] = value
        return cls(
            name=meta["name"],
            item_ids=arrays["item_ids"],
            item_fields={k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("item_field/")},
            user_ids=arrays["user_ids"],
            user_fields={k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("user_field/")},
            seq_offsets=arrays["seq_offsets"], seq_item=arrays["seq_item"], seq_rating=arrays["seq_rating"],
            seq_timestamp=arrays["seq_timestamp"], samples=samples, has_timestamps=meta["has_timestamps"],
            options=meta["options"], filter_log=[tuple(x) for x in meta["filter_log"]], skipped=meta["skipped"],
            accounting=meta.get("accounting", {}),
        )


def format_statistics(stats: Mapping) -> str:
    """A human-readable table of `CTRData.statistics()`."""
    lines = [f"{stats['name']}: {stats['users']} users, {stats['items']} items, "
             f"{stats['interactions']} interactions, {stats['samples']} samples"]
    for step, rows in stats["filter_log"]:
        lines.append(f"  {step:<70s} {rows:>10}")
    for reason, count in stats["skipped"].items():
        lines.append(f"  reader: {reason:<62s} {count:>10}")
    lines.append(f"  {'split':<12s}{'samples':>10s}{'users':>8s}{'pos.rate':>10s}{'hist.mean':>11s}"
                 f"{'hist.med':>10s}{'hist.max':>10s}")
    for split, s in stats["splits"].items():
        h = s["history_length"]
        lines.append(f"  {split:<12s}{s['samples']:>10d}{s['users']:>8d}{s['positive_rate']:>10.4f}"
                     f"{h['mean']:>11.1f}{h['median']:>10.1f}{h['max']:>10d}")
    return "\n".join(lines)
