"""Which train rows make the instruction-tuning set, as the official pipeline draws them (paper-spec 1.6).

The official code seeds Python's `random` with 42 and samples `sample_size` train rows; with retrieval's
`high` and `sequential` orders available each row gives three prompts, interleaved per row in the order
[high, sequential, simple] (the `mixed` set). This module is that draw only; building the prompts is
prompts.py, tokenising them examples.py.
"""
from __future__ import annotations

import random
from collections.abc import Sequence


def sample_training_indices(num_train: int, count: int, seed: int = 42) -> list[int]:
    """The official `random.seed(42); random.sample(range(N), n)` draw of instruction-tuning rows."""
    if count > num_train:
        raise ValueError(f"asked for {count} training rows, the train split has {num_train}")
    rng = random.Random(seed)
    return rng.sample(range(num_train), count)


def mixed_training_set(indices: Sequence[int], variants: dict[str, Sequence]) -> list:
    """Interleave, per sampled row, its prompt variants in the official order [high, sequential, simple]
    (the `mixed` set); `variants` maps order name -> per-row prompts aligned with `indices`."""
    names = [n for n in ("high", "sequential", "simple") if n in variants]
    if not names:
        raise ValueError(f"no known prompt variants in {sorted(variants)}")
    for n in names:
        if len(variants[n]) != len(indices):
            raise ValueError(f"variant {n!r} has {len(variants[n])} prompts for {len(indices)} rows")
    return [variants[n][k] for k in range(len(indices)) for n in names]


def training_plan(num_train: int, sample_size: int, train_size: int, available_orders: Sequence[str],
                  seed: int = 42) -> tuple[list[int], list[str]]:
    """Which train rows and orders make the instruction-tuning set, as the official pipeline (spec 1.6).

    `sample_size` rows are drawn with `random.seed(seed)` (8192 for ML-1M/Amazon, 256 for BookCrossing);
    when retrieval supplies `high` and `sequential`, every row gets the `mixed` variants
    [high, sequential, simple], else `simple` alone. `train_size` > 0 keeps the first `train_size` prompts
    of that interleaved list (official: 1024 plain, doubled for mixed), i.e. the first
    ceil(train_size / variants) rows. Returns (rows, orders) for `build_examples`, and the caller truncates
    to `train_size` prompts.
    """
    rows = sample_training_indices(num_train, min(sample_size, num_train) if sample_size else num_train,
                                   seed)
    mixed = all(o in available_orders for o in ("high", "sequential", "simple"))
    orders = ["high", "sequential", "simple"] if mixed else ["simple"]
    if train_size:
        rows = rows[:-(-train_size // len(orders))]
    return rows, orders
