"""Numpy batches onto the mesh: the leading (batch) dimension is split over the data-parallel axes.

Every row is served: a final short batch is padded up to the batch size and carries `mask` = 0 on
the padding rows (unless `drop_remainder`), so evaluation never silently loses samples. With several
processes, each process feeds only its own slice of every global batch and
`jax.make_array_from_process_local_data` assembles the global array.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping

import jax
import numpy as np
from jax.sharding import Mesh

from rallrec_jax import parallel


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Places a process-local batch (rows of this process) as global arrays sharded over `batch`."""
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        sharding = parallel.batch_sharding(mesh, value.ndim)
        global_shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
        out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return out


def num_batches(num_rows: int, batch_size: int, drop_remainder: bool = False) -> int:
    return num_rows // batch_size if drop_remainder else -(-num_rows // batch_size)


def batch_iterator(
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    mesh: Mesh | None = None,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    drop_remainder: bool = False,
) -> Iterator[dict]:
    """Yields dicts of [batch_size, ...] arrays plus `mask` [batch_size] (1 real row, 0 padding).

    `batch_size` is global; it must divide evenly over the mesh's data-parallel devices and over
    processes. The shuffle order depends only on (seed, epoch), so a resumed run sees the same order.
    Returns numpy arrays when `mesh` is None, else global jax arrays.
    """
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"arrays differ in length: {lengths}")
    (num_rows,) = set(lengths.values()) or {0}
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if mesh is not None:
        dp = parallel.data_parallel_size(mesh)
        if batch_size % dp:
            raise ValueError(f"batch_size {batch_size} does not divide over {dp} data-parallel devices")
    procs, rank = jax.process_count(), jax.process_index()
    if batch_size % procs:
        raise ValueError(f"batch_size {batch_size} does not divide over {procs} processes")
    order = np.arange(num_rows)
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(num_rows)
    local = batch_size // procs
    for b in range(num_batches(num_rows, batch_size, drop_remainder)):
        rows = order[b * batch_size:(b + 1) * batch_size]
        mask = np.ones(batch_size, np.int32)
        if len(rows) < batch_size:  # pad with row 0, masked out
            mask[len(rows):] = 0
            rows = np.concatenate([rows, np.zeros(batch_size - len(rows), rows.dtype)])
        mine = slice(rank * local, (rank + 1) * local)
        batch = {k: np.asarray(v)[rows[mine]] for k, v in arrays.items()}
        batch["mask"] = mask[mine]
        yield batch if mesh is None else shard_batch(batch, mesh)
