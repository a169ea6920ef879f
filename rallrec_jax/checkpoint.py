"""Orbax checkpoints: a CheckpointManager over absolute paths, resume from the latest step, adapters only.

Orbax saves asynchronously and fails on relative paths inside its background thread, so every directory
is resolved to an absolute path here and `save(..., wait=True)` blocks until the files are on disk.
Only the LoRA adapters (`nnx.LoRAParam`) are saved for a tuned model: the base comes from its HF/GGUF file.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx


def absolute(directory: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(directory).expanduser().resolve()


def manager(directory: str | os.PathLike, max_to_keep: int | None = 3) -> ocp.CheckpointManager:
    """A CheckpointManager over `directory` (made absolute, created if missing)."""
    path = absolute(directory)
    path.mkdir(parents=True, exist_ok=True)
    return ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))


def save(mgr: ocp.CheckpointManager, step: int, tree: Any, wait: bool = True) -> None:
    """Saves a pytree (e.g. `nnx.to_pure_dict(state)`) at `step`; `wait` blocks until it is written."""
    mgr.save(step, args=ocp.args.StandardSave(tree))
    if wait:
        mgr.wait_until_finished()


def latest_step(directory: str | os.PathLike) -> int | None:
    """The newest saved step under `directory`, or None when there is none (or no directory)."""
    path = absolute(directory)
    if not path.is_dir():
        return None
    mgr = manager(path)
    try:
        return mgr.latest_step()
    finally:
        mgr.close()


def restore(mgr: ocp.CheckpointManager, abstract_tree: Any, step: int | None = None) -> Any:
    """Restores `step` (default: latest) into the structure, dtypes and shardings of `abstract_tree`."""
    step = mgr.latest_step() if step is None else step
    if step is None:
        raise ValueError(f"no checkpoint under {mgr.directory}")
    if step not in mgr.all_steps():
        raise ValueError(f"no checkpoint for step {step} under {mgr.directory} (have {sorted(mgr.all_steps())})")
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), abstract_tree)
    return mgr.restore(step, args=ocp.args.StandardRestore(abstract))


def save_model_state(directory: str | os.PathLike, step: int, model: nnx.Module,
                     variables: Any = nnx.Param, max_to_keep: int | None = 3) -> pathlib.Path:
    """Saves the model's `variables` (a filter: nnx.Param, nnx.LoRAParam, ...) at `step`; returns the folder."""
    mgr = manager(directory, max_to_keep)
    try:
        save(mgr, step, nnx.to_pure_dict(nnx.state(model, variables)))
    finally:
        mgr.close()
    return absolute(directory)


def restore_model_state(directory: str | os.PathLike, model: nnx.Module, variables: Any = nnx.Param,
                        step: int | None = None) -> int:
    """Loads the saved `variables` into `model` in place (keeping their shardings); returns the step."""
    mgr = manager(directory)
    try:
        step = mgr.latest_step() if step is None else step
        state = nnx.state(model, variables)
        restored = restore(mgr, nnx.to_pure_dict(state), step)
    finally:
        mgr.close()
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)
    return step


def save_adapters(directory: str | os.PathLike, step: int, model: nnx.Module, max_to_keep: int | None = 3):
    """Only the LoRA adapters (a few MB for an 8B model)."""
    if not jax.tree.leaves(nnx.state(model, nnx.LoRAParam)):
        raise ValueError("model has no nnx.LoRAParam adapters to save")
    return save_model_state(directory, step, model, nnx.LoRAParam, max_to_keep)


def restore_adapters(directory: str | os.PathLike, model: nnx.Module, step: int | None = None) -> int:
    """Loads adapters saved by `save_adapters` into a model with the same LoRA layout."""
    if not jax.tree.leaves(nnx.state(model, nnx.LoRAParam)):
        raise ValueError("model has no nnx.LoRAParam adapters: apply_lora with the saved config first")
    return restore_model_state(directory, model, nnx.LoRAParam, step)
