"""Device mesh, logical-axis sharding rules, and multi-host start-up.

Every array in the project is annotated with *logical* axis names ("batch", "embed", "mlp", ...);
this module is the one place that maps them to the physical mesh axes ("data", "fsdp", "tensor").
One config therefore runs on 1 device, 8 fake CPU devices, or a GPU/TPU slice: only the mesh shape
changes. Meshes use Auto axis types so GSPMD propagates shardings through un-annotated ops.
"""
from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (or tuple of mesh axes, or None for replicated).
LOGICAL_AXIS_RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),
    "length": None,
    "embed": "fsdp",
    "mlp": "tensor",
    "heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "vocab": "tensor",
    "lora_rank": None,
    "layers": None,  # the stacked decoder blocks' leading axis: every device holds every layer's slice
    "users": ("data", "fsdp"),
    "items": None,
    "features": None,
}


def mesh_shape_from_config(shape: Mapping[str, int] | None, num_devices: int | None = None) -> dict[str, int]:
    """Resolves a {"data": -1, "fsdp": 1, "tensor": 1} style shape; at most one axis may be -1 (the rest)."""
    num_devices = jax.device_count() if num_devices is None else num_devices
    shape = dict(shape or {"data": -1})
    unknown = [a for a in shape if a not in MESH_AXES]
    if unknown:
        raise ValueError(f"mesh axes {unknown} are not among {MESH_AXES}")
    resolved = {a: int(shape.get(a, 1)) for a in MESH_AXES}
    free = [a for a, n in resolved.items() if n == -1]
    if len(free) > 1:
        raise ValueError(f"mesh shape {shape}: only one axis may be -1, got {free}")
    fixed = math.prod(n for n in resolved.values() if n != -1)
    if free:
        if num_devices % fixed:
            raise ValueError(f"mesh shape {shape}: {num_devices} devices do not divide by {fixed}")
        resolved[free[0]] = num_devices // fixed
    if math.prod(resolved.values()) != num_devices:
        raise ValueError(f"mesh shape {resolved} needs {math.prod(resolved.values())} devices, have {num_devices}")
    return resolved


# What a machine needs for jax to see its accelerator: the matching jaxlib plugin (pyproject.toml's extras).
_ACCELERATOR_FIX = ("jax sees no GPU/TPU: on a GPU machine install the CUDA jaxlib (pip install -e '.[cuda12]', "
                    "or '.[cuda13]'), on a TPU VM pip install -e '.[tpu]'; to run on this CPU, choose a config "
                    "without a paper-gpu*/paper-tpu variant or set --config.mesh.platform=cpu with axes that fit "
                    "the devices (XLA_FLAGS=--xla_force_host_platform_device_count=N gives N fake CPU devices)")


def _check_devices(platform: str, shape: Mapping[str, int], devices: Sequence[jax.Device]) -> None:
    """A config asking for an accelerator (mesh.platform) or for more devices than a CPU-only jax has fails
    here with the fix, instead of deep inside jax."""
    have = devices[0].platform if devices else "none"
    if platform not in ("", "cpu", "gpu", "tpu"):
        raise ValueError(f"config.mesh.platform={platform!r} must be '', 'cpu', 'gpu' or 'tpu'")
    if platform and platform != have:
        raise RuntimeError(f"the config asks for a {platform.upper()} mesh (config.mesh.platform={platform!r}) but "
                           f"jax sees {len(devices)} {have.upper()} device(s); " + (
                               _ACCELERATOR_FIX if have == "cpu" else "run it on a machine of that kind"))
    need = math.prod(int(n) for n in shape.values() if int(n) != -1)
    if have == "cpu" and need > len(devices):
        raise RuntimeError(f"the mesh {dict(shape)} needs {need} devices but jax sees {len(devices)} CPU "
                           f"device(s); {_ACCELERATOR_FIX}")


def make_mesh(shape: Mapping[str, int | str] | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over all devices (or `devices`), Auto axis types. `shape` may name the
    platform it is meant for ({"platform": "gpu", ...}, as the paper-scale configs do)."""
    devices = list(jax.devices() if devices is None else devices)
    axes = dict(shape or {})
    platform = str(axes.pop("platform", "") or "")
    _check_devices(platform, axes, devices)
    resolved = mesh_shape_from_config(axes or None, len(devices))
    return jax.make_mesh(
        tuple(resolved[a] for a in MESH_AXES),
        MESH_AXES,
        axis_types=(AxisType.Auto,) * len(MESH_AXES),
        devices=devices,
    )


def logical_to_spec(logical_axes: Sequence[str | None], rules: Mapping[str, object] | None = None) -> PartitionSpec:
    """("batch", "length") -> PartitionSpec(("data", "fsdp"), None); a mesh axis is used at most once."""
    rules = LOGICAL_AXIS_RULES if rules is None else rules
    used: set[str] = set()
    spec = []
    for name in logical_axes:
        target = None if name is None else rules.get(name)
        if name is not None and name not in rules:
            raise KeyError(f"no sharding rule for logical axis {name!r}")
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a not in used)
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*spec)


def named_sharding(mesh: Mesh, logical_axes: Sequence[str | None]) -> NamedSharding:
    """NamedSharding for an array whose dimensions carry these logical names; axes of size 1 drop out."""
    spec = logical_to_spec(logical_axes)
    cleaned = []
    for entry in spec:
        axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
        axes = tuple(a for a in axes if mesh.shape[a] > 1)
        cleaned.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return NamedSharding(mesh, PartitionSpec(*cleaned))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Leading dimension over the data-parallel axes, the rest replicated."""
    return named_sharding(mesh, ("batch",) + (None,) * (ndim - 1))


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    cpu_collectives: bool = False,
) -> None:
    """Joins this process to a multi-host run; a no-op for a single process (num_processes <= 1).

    On CPU the collectives need gloo; on GPU/TPU clusters jax discovers everything from the
    environment when the arguments are left as None.
    """
    if num_processes is not None and num_processes <= 1:
        return
    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
    logging.info("process %d of %d joined; %d global devices", jax.process_index(), jax.process_count(),
                 jax.device_count())


DISTRIBUTED_MODES = ("", "auto")


def distributed_arguments(mode: str = "", coordinator: str | None = None, num_processes: int | None = None,
                          process_id: int | None = None) -> dict | None:
    """The keyword arguments of `jax.distributed.initialize` that the multi-host flags ask for, or None (a
    single process). `mode="auto"`: jax's own cluster detection (TPU pods, SLURM, ...), with whichever of the
    three values are given; `mode=""`: explicit, all three needed once num_processes > 1."""
    if mode not in DISTRIBUTED_MODES:
        raise ValueError(f"--distributed={mode!r}: give 'auto' (jax.distributed.initialize() detects the cluster) "
                         "or leave it empty (explicit --coordinator, --num_processes, --process_id)")
    if mode == "auto":
        return {"coordinator_address": coordinator or None, "num_processes": num_processes,
                "process_id": process_id}
    if num_processes is None or num_processes <= 1:
        if coordinator or process_id:
            raise ValueError(f"--coordinator={coordinator!r} / --process_id={process_id!r} without "
                             "--num_processes > 1: give the process count too, or --distributed=auto")
        return None
    missing = [f"--{name}" for name, value in (("coordinator", coordinator), ("process_id", process_id))
               if value is None or value == ""]
    if missing:
        raise ValueError(f"--num_processes={num_processes} needs {' and '.join(missing)} on every process "
                         "(or --distributed=auto on a cluster jax detects)")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"--process_id={process_id} must be in [0, {num_processes})")
    return {"coordinator_address": coordinator, "num_processes": num_processes, "process_id": process_id}


def fetch(x) -> np.ndarray:
    """A (possibly global) jax array as numpy, the whole value on every process: an array that spans other
    processes' devices is gathered (`process_allgather`), any other is copied. Every process must call it."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def is_writer() -> bool:
    """Whether this process writes the run's files: process 0 of a multi-host run, or the only process."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here until all have come (a no-op for one process). `name` must be the same string
    on every process at the same point."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def writer_first(name: str) -> Iterator[None]:
    """Process 0 runs the block first (writing its files), then the others run it (finding those files up to
    date and reading them). For work without collectives (numpy preparation): with one process, just the block."""
    if jax.process_count() == 1:
        yield
        return
    if not is_writer():
        barrier(f"{name}: written")
    yield
    if is_writer():
        barrier(f"{name}: written")
