"""Evaluation samples: which rows of a split a table scores, drawn so that they hold many users.

The temporal splits are sorted by time, so their first N rows belong to a handful of users (the first 100
ML-1M test rows are 2 users): any score that depends on the user alone then lands almost anywhere in AUC.
A user-stratified sample spreads the rows over the users instead:

1. each user's rows are shuffled (seeded) and capped at `user_cap` (0 = no cap): the pool;
2. one pool row per user, for `n` randomly ordered users when `n` is below the number of users, else for
   every user; then the rest drawn uniformly, without replacement, from what is left of the pool.

So a sample of n rows covers min(users, n) users, never repeats a row, holds at most `user_cap` rows of a
user, and is a pure function of (the split's user column, n, cap, seed). Its ORDER is the order of the
draw: the per-user rows first (in random user order), then the uniform rest (in random order). Every
prefix of it is therefore itself such a sample of that size, which is what a stage that scores a
sub-sample (the reasoning rows) takes: the first `reasoning.num_rows` rows, a prefix that a longer
run extends without changing.

`how="first"` keeps the official first-N rows (the official code's evaluation); `n = 0` takes the whole split
(stratified: uncapped, in the order above).
`EvalSample` carries the row ids with how they were drawn; `save`/`load` keep it under the workdir
(`<workdir>/evaluate/sample.json`), so every table row can be checked against the same ids.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
from collections.abc import Mapping

import numpy as np

from rallrec_jax import artifacts

HOWS = ("stratified", "first")


@dataclasses.dataclass(frozen=True)
class EvalSample:
    """Row ids of one split in sample order, with their users and how they were drawn."""

    split: str
    rows: np.ndarray  # [n] int64 row index in the split, in sample order
    users: np.ndarray  # [n] int64 user index of each row
    how: str  # "stratified" | "first"
    seed: int
    user_cap: int  # 0 = none (and always 0 for "first")
    requested: int  # the n asked for (0 = all)
    split_size: int
    labels: np.ndarray | None = None  # [n] the rows' labels, when drawn from a data set (for the report)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def num_users(self) -> int:
        return int(np.unique(self.users).shape[0])

    def prefix(self, n: int) -> EvalSample:
        """The first n rows (all when n is 0 or above the size): itself a sample of that size (module doc)."""
        n = len(self) if not n else min(int(n), len(self))
        return dataclasses.replace(self, rows=self.rows[:n], users=self.users[:n], requested=n,
                                   labels=None if self.labels is None else self.labels[:n])

    def fingerprint(self) -> str:
        """Identity of the rows (split and ids, in order): two table rows with equal fingerprints were scored
        on exactly the same rows."""
        return artifacts.digest([self.split.encode(), np.ascontiguousarray(self.rows, np.int64).tobytes()])

    def describe(self) -> str:
        """One line for a table header: how many rows and users, of what, drawn how."""
        what = f"{len(self):,} of {self.split_size:,} {self.split} rows, {self.num_users:,} users"
        if self.how == "first":
            return f"{what}: the split's first {len(self):,} rows (eval_sample='first', the official choice)"
        cap = f"at most {self.user_cap} rows per user" if self.user_cap else "no per-user cap"
        short = f"; {self.requested:,} were asked for, the capped pool holds {len(self):,}" \
            if self.requested and len(self) < min(self.requested, self.split_size) else ""
        return f"{what}: a user-stratified sample (seed {self.seed}, {cap}){short}"

    def summary(self) -> dict:
        """JSON-ready description without the ids (for stage summaries and the report)."""
        return {"split": self.split, "rows": len(self), "users": self.num_users, "how": self.how,
                "seed": self.seed, "user_cap": self.user_cap, "requested": self.requested,
                "split_size": self.split_size, "fingerprint": self.fingerprint(), "description": self.describe()}

    def to_json(self) -> dict:
        out = {**self.summary(), "row_ids": self.rows.tolist(), "user_ids": self.users.tolist()}
        if self.labels is not None:
            out["labels"] = self.labels.tolist()
        return out

    @classmethod
    def from_json(cls, obj: Mapping) -> EvalSample:
        return cls(split=obj["split"], rows=np.asarray(obj["row_ids"], np.int64),
                   users=np.asarray(obj["user_ids"], np.int64), how=obj["how"], seed=int(obj["seed"]),
                   user_cap=int(obj["user_cap"]), requested=int(obj["requested"]),
                   split_size=int(obj["split_size"]),
                   labels=np.asarray(obj["labels"], np.int64) if "labels" in obj else None)

    def save(self, path: str | os.PathLike) -> pathlib.Path:
        """Writes the sample as JSON (atomically); returns the path."""
        return artifacts.atomic_write_json(path, self.to_json(), indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike) -> EvalSample:
        path = pathlib.Path(path)
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: not a readable evaluation sample ({exc}); delete it and rerun") from exc


def stratified_rows(users: np.ndarray, n: int, user_cap: int, seed: int) -> np.ndarray:
    """Row positions [m] (m = min(n, capped pool); n = 0: the whole pool) of a user-stratified sample, in
    draw order (module docstring). users: [N] the user of each row."""
    users = np.asarray(users)
    if users.ndim != 1:
        raise ValueError(f"users must be 1-D (one user per row), got shape {users.shape}")
    if n < 0 or user_cap < 0:
        raise ValueError(f"sample size {n} and user cap {user_cap} must be >= 0")
    rng = np.random.default_rng(seed)
    # Rows grouped by user in a random order within each user: a random key, then a stable sort by user.
    order = np.lexsort((rng.random(users.shape[0]), users))  # [N]
    grouped = users[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])  # [U] first row of each user
    rank = np.arange(users.shape[0]) - np.repeat(starts, np.diff(np.r_[starts, users.shape[0]]))  # [N] within-user
    pool = order if not user_cap else order[rank < user_cap]  # capped pool, still grouped by user
    pool_rank = rank if not user_cap else rank[rank < user_cap]
    firsts, rest = pool[pool_rank == 0], pool[pool_rank > 0]  # [U] one row per user, [P - U] the others
    n = pool.shape[0] if not n else min(int(n), pool.shape[0])
    firsts = firsts[rng.permutation(firsts.shape[0])]
    if n <= firsts.shape[0]:
        return firsts[:n].astype(np.int64)
    fill = rest[rng.permutation(rest.shape[0])[: n - firsts.shape[0]]]
    return np.concatenate([firsts, fill]).astype(np.int64)


def draw(users: np.ndarray, split: str, n: int, how: str = "stratified", user_cap: int = 10,
         seed: int = 0) -> EvalSample:
    """The evaluation sample of a split whose rows belong to `users` [N] (see the module docstring)."""
    users = np.asarray(users)
    if how not in HOWS:
        raise ValueError(f"eval_sample={how!r} is not one of {HOWS} (configs/base_generation.py sets it)")
    total = int(users.shape[0])
    if total == 0:
        raise ValueError(f"the {split} split has no rows to sample")
    if how == "first":
        rows = np.arange(total if not n else min(int(n), total), dtype=np.int64)
        user_cap = 0
    else:
        user_cap = int(user_cap) if n else 0  # n = 0 is the whole split: nothing capped, only ordered
        rows = stratified_rows(users, int(n), user_cap, int(seed))
        if n and rows.shape[0] < min(int(n), total):
            logging.warning("%s sample: %d rows asked for, the pool capped at %d rows per user holds %d; raise "
                            "eval_user_cap for more", split, n, user_cap, rows.shape[0])
    return EvalSample(split=split, rows=rows, users=users[rows].astype(np.int64), how=how, seed=int(seed),
                      user_cap=int(user_cap), requested=int(n), split_size=total)


def sample_settings(config, prefix: str = "eval") -> dict:
    """(size, how, user cap, seed) of a sample from a config section: `eval_size`, `eval_sample`,
    `eval_user_cap`, `eval_seed` (the top-level config for test, `config.finetune` for validation).
    Absent fields take the defaults ("stratified", cap 10, seed 0), so older configs keep working."""
    get = config.get if hasattr(config, "get") else (lambda k, d=None: getattr(config, k, d))
    return {"n": int(get(f"{prefix}_size", 0) or 0), "how": get(f"{prefix}_sample", "stratified"),
            "user_cap": int(get(f"{prefix}_user_cap", 10)), "seed": int(get(f"{prefix}_seed", 0))}


def split_sample(data, split: str, settings: Mapping) -> EvalSample:
    """The sample of `split` of a prepared data set (ctr.CTRData) under `sample_settings`, with its labels."""
    s = draw(data.samples[split]["user"], split, settings["n"], settings["how"], settings["user_cap"],
             settings["seed"])
    return dataclasses.replace(s, labels=data.samples[split]["label"][s.rows].astype(np.int64))


def evaluation_sample(data, config) -> EvalSample:
    """The test rows every table row is scored on: `config.eval_size` rows of `config.evaluate.split`
    (test) drawn as `config.eval_sample` (`eval_user_cap`, `eval_seed`)."""
    split = config.evaluate.split if "evaluate" in config else "test"
    return split_sample(data, split, sample_settings(config))


def validation_sample(data, finetune_config) -> EvalSample:
    """The validation rows early stopping reads: `finetune.eval_size` rows drawn as `finetune.eval_sample`."""
    return split_sample(data, "validation", sample_settings(finetune_config))
