"""Early stopping on a validation metric: the best value, its step, and evaluations left before stopping.

A typed object instead of a dict of floats, because the trainer checkpoints it (so a resumed run stops where
an uninterrupted one would) and reads it back from float64 arrays: `to_arrays` / `from_arrays` keep that
round trip, with the same four keys the checkpoints have always held (best, best_step, bad, done).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

METRICS = {"eval_loss": "min", "eval_auc": "max"}  # which way is better for each early-stopping metric


@dataclasses.dataclass
class EarlyStopping:
    """`patience` evaluations without improvement stop the run (0 = never stop); NaN never improves."""

    patience: int
    minimize: bool = True
    best: float = math.nan  # the best value seen (NaN before the first finite one)
    best_step: int = -1  # the step that produced it (-1: none yet)
    bad: int = 0  # evaluations since the best one
    done: bool = False  # patience ran out

    @classmethod
    def for_metric(cls, metric: str, patience: int) -> EarlyStopping:
        if metric not in METRICS:
            raise ValueError(f"finetune.early_stopping_metric={metric!r} must be one of {sorted(METRICS)}")
        return cls(patience=int(patience), minimize=METRICS[metric] == "min")

    @property
    def patience_left(self) -> int | None:
        """Evaluations without improvement still allowed (None when patience is 0, i.e. never stops)."""
        return max(self.patience - self.bad, 0) if self.patience else None

    def update(self, value: float, step: int) -> bool:
        """Records the evaluation after `step` updates; True when it is the new best (keep its adapters)."""
        improved = not math.isnan(value) and (
            math.isnan(self.best) or (value < self.best if self.minimize else value > self.best))
        if improved:
            self.best, self.best_step, self.bad = float(value), int(step), 0
        else:
            self.bad += 1
        if self.patience and self.bad >= self.patience:
            self.done = True
        return improved

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The checkpointed form: float64 scalars under best, best_step, bad, done."""
        return {k: np.asarray(v, np.float64) for k, v in
                {"best": self.best, "best_step": self.best_step, "bad": self.bad, "done": self.done}.items()}

    @staticmethod
    def abstract_arrays() -> dict[str, np.ndarray]:
        """The shapes `to_arrays` writes, for restoring a checkpoint."""
        return {k: np.zeros((), np.float64) for k in ("best", "best_step", "bad", "done")}

    def restore(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Takes the state of a checkpoint written by `to_arrays` (patience and direction stay this run's)."""
        self.best = float(arrays["best"])
        self.best_step, self.bad, self.done = int(arrays["best_step"]), int(arrays["bad"]), bool(int(arrays["done"]))
