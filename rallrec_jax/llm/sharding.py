"""Model variables onto a mesh: logical axes -> NamedSharding (fitted to the shapes), whole models moved.

Every variable carries `logical_axes` metadata ("layers", "embed", "heads", ...); `rallrec_jax.parallel`
maps those names to mesh axes. Real models have sizes like 9 heads or a 49,152 vocabulary, so a mesh axis
that does not divide a dimension is dropped for it (that dimension replicated) instead of failing at load.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rallrec_jax import parallel


def logical_axes(var: nnx.Variable, ndim: int) -> tuple[str | None, ...]:
    """A variable's logical axes, or all-None (replicated) when it has none (RNG streams, counters)."""
    axes = var.get_metadata().get("logical_axes")
    return tuple(axes) if axes is not None else (None,) * ndim


def fitted_sharding(mesh: Mesh, axes: Sequence[str | None], shape: Sequence[int]) -> NamedSharding:
    """The logical sharding, with mesh axes that do not divide a dimension dropped (that dim replicated)."""
    spec = parallel.named_sharding(mesh, axes).spec
    fitted = []
    for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (entry,) if isinstance(entry, str) else tuple(entry or ())
        kept, ways = [], 1
        for a in names:
            if dim % (ways * mesh.shape[a]) == 0:
                kept.append(a)
                ways *= mesh.shape[a]
        fitted.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return NamedSharding(mesh, PartitionSpec(*fitted))


def param_shardings(state: nnx.State, mesh: Mesh):
    """A NamedSharding per variable of `state` (concrete or abstract), from its logical_axes metadata."""
    def one(var):
        shape = var.get_value().shape
        return var.replace(fitted_sharding(mesh, logical_axes(var, len(shape)), shape))
    return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_model(model: nnx.Module, mesh: Mesh) -> nnx.Module:
    """Moves every variable of an existing model into its logical sharding on `mesh` (in place).

    One process: `jax.device_put`. Several processes (`jax.distributed`): device_put cannot target another
    process's devices, so each process, holding the full host copy, builds the global array from its own
    addressable shards."""
    state = nnx.state(model)
    shardings = param_shardings(state, mesh)
    if jax.process_count() == 1:
        nnx.update(model, jax.device_put(state, shardings))
        return model

    def put(x, sharding):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            raw = np.asarray(jax.random.key_data(x))
            arr = jax.make_array_from_callback(raw.shape, sharding, lambda idx: raw[idx])
            return jax.random.wrap_key_data(arr, impl=jax.random.key_impl(x))
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    nnx.update(model, jax.tree.map(put, state, shardings))
    return model
