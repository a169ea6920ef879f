"""The learning curve of a LoRA run: validation AUC and loss, and the training loss, against examples seen.

Why: whether tuning learns to read the ratings in the prompt shows in how validation AUC moves as examples
are seen, not in one final number; a flat curve at the zero-shot AUC with a falling training loss says the
model learns the answer's prior (issue 13). The curve is read from the run's `metrics.jsonl`, so it can be
drawn again for any finished or interrupted run; the same scalars are in its TensorBoard events (`tb/`).
"""
from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Mapping
from typing import Any

from rallrec_jax import artifacts

VALIDATION_KEYS = ("eval_auc", "eval_loss", "eval_logloss", "eval_acc")  # Trainer.evaluate's metrics


def read_curve(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The curve's numbers from `<run_dir>/metrics.jsonl`, JSON-ready.

    A resumed run logs again the steps after its last checkpoint, so the last record of a step wins. The x axis
    is `examples_seen` (real training examples, fillers not counted); a log written before that field existed
    falls back to global steps and says so in `x`."""
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics log; the learning curve is read from a finetune run's folder")
    train: dict[int, dict] = {}
    validation: dict[int, dict] = {}
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{line_no}: not a metrics record ({err}); the line reads {line[:120]!r}") from err
        if "loss" in record:
            train[step] = record
        if any(k in record for k in VALIDATION_KEYS):
            validation[step] = record
    records = list(train.values()) + list(validation.values())
    by_examples = bool(records) and all("examples_seen" in r for r in records)
    x_key = "examples_seen" if by_examples else "step"

    def column(rows: Mapping[int, dict], key: str) -> list[float | None]:
        out = []
        for step in sorted(rows):
            v = rows[step].get(key)
            out.append(float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None)
        return out

    best = [r.get("best_step") for r in validation.values() if r.get("best_step") is not None]
    return {"figure": "learning_curve", "metrics": str(path), "x": x_key,
            "train": {"step": sorted(train), x_key: column(train, x_key), "loss": column(train, "loss")},
            "validation": {"step": sorted(validation), x_key: column(validation, x_key),
                           **{k: column(validation, k) for k in VALIDATION_KEYS}},
            "best_step": int(best[-1]) if best else None}


def _moving_mean(values: list[float | None], window: int) -> list[float | None]:
    out: list[float | None] = []
    for i in range(len(values)):
        part = [v for v in values[max(0, i - window + 1):i + 1] if v is not None]
        out.append(sum(part) / len(part) if part else None)
    return out


def _nan(values: list[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


def draw(numbers: Mapping[str, Any], fig) -> None:
    """Validation AUC (left) against examples seen; the validation loss and the smoothed training loss (right)."""
    x_key = numbers["x"]
    label = "training examples seen" if x_key == "examples_seen" else "global steps"
    val, train = numbers["validation"], numbers["train"]
    ax_auc, ax_loss = fig.subplots(1, 2)
    ax_auc.plot(val[x_key], _nan(val["eval_auc"]), "o-", label="validation AUC")
    ax_auc.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax_auc.set_xlabel(label)
    ax_auc.set_ylabel("validation AUC")
    ax_auc.set_title("validation AUC")
    window = max(1, len(train["loss"]) // 20)
    ax_loss.plot(train[x_key], _nan(_moving_mean(train["loss"], window)), lw=1,
                 label=f"training loss (mean of {window})")
    ax_loss.plot(val[x_key], _nan(val["eval_loss"]), "o-", label="validation loss")
    ax_loss.set_xlabel(label)
    ax_loss.set_ylabel("answer-token loss")
    ax_loss.set_title("loss")
    ax_loss.legend(fontsize=8)


def save_learning_curve(run_dir: str | os.PathLike, path_png: str | os.PathLike | None = None) -> tuple[str, str]:
    """Draws the curve of `run_dir` into `path_png` (default `<run_dir>/learning_curve.png`) and writes its numbers
    as JSON beside it, each atomically; returns (png_path, json_path)."""
    numbers = read_curve(run_dir)
    path_png = path_png if path_png else pathlib.Path(run_dir) / "learning_curve.png"
    return artifacts.save_figure(numbers, path_png, draw, (11, 4.2))
