"""Orbax checkpoints: a CheckpointManager over absolute paths, resume from the latest step, adapters only.

Orbax saves asynchronously and fails on relative paths inside its background thread, so every directory
is resolved to an absolute path here and `save(..., wait=True)` blocks until the files are on disk.
Only the LoRA adapters (`nnx.LoRAParam`) are saved for a tuned model: the base comes from its HF/GGUF file.
Beside their steps, `lora_config.json` records their rank, alpha, dropout, targets and base model, so that
`restore_adapters` rebuilds the layout on a bare model and refuses another base or layout by name.

Restores are verified: every saved step gets a manifest (`<directory>.manifests/<step>.json`: each file's size
and sha256); a step whose files no longer match it (a truncated or damaged file, a disk that filled up), or,
without a manifest, no longer read back, is reported by path and moved aside into `<directory>.damaged/`, and
the previous good step is used. A structure that does not match the target (another LoRA layout) is an error,
never taken for damage.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil
import time
from typing import Any

import jax
import numpy as np
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
    """Saves a pytree (e.g. `nnx.to_pure_dict(state)`) at `step`; `wait` blocks until it is written, then the
    step's manifest (every file's size and sha256) is written, which later verifies it without orbax."""
    mgr.save(step, args=ocp.args.StandardSave(tree))
    if wait:
        mgr.wait_until_finished()
        if jax.process_index() == 0:
            write_manifest(mgr.directory, step)


def _manifest_path(directory: str | os.PathLike, step: int) -> pathlib.Path:
    path = absolute(directory)
    return path.with_name(path.name + ".manifests") / f"{step}.json"


def write_manifest(directory: str | os.PathLike, step: int) -> pathlib.Path:
    """`<directory>.manifests/<step>.json`: the size and sha256 of every file of a finished step."""
    from rallrec_jax import artifacts

    root = absolute(directory) / str(step)
    files = {str(p.relative_to(root)): {"size": p.stat().st_size, "sha256": artifacts.file_digest(p)}
             for p in sorted(root.rglob("*")) if p.is_file()}
    path = artifacts.atomic_write_json(_manifest_path(directory, step), {"step": step, "files": files})
    for old in path.parent.glob("*.json"):  # the manifests of steps orbax has since deleted (max_to_keep)
        if not (absolute(directory) / old.stem).is_dir():
            old.unlink(missing_ok=True)
    return path


def _manifest_damage(directory: str | os.PathLike, step: int) -> str | None:
    """Why a step's files differ from its manifest (missing, cut short, changed), or None when they match."""
    from rallrec_jax import artifacts

    manifest = json.loads(_manifest_path(directory, step).read_text())
    root = absolute(directory) / str(step)
    for name, want in manifest["files"].items():
        path = root / name
        if not path.is_file():
            return f"{path} is missing"
        size = path.stat().st_size
        if size != want["size"]:
            return f"{path} holds {size} bytes, {want['size']} were written"
        if artifacts.file_digest(path) != want["sha256"]:
            return f"{path} differs from what was written (sha256)"
    return None


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


class DamagedCheckpointError(ValueError):
    """No step of a checkpoint folder reads back; the message names the folder to delete."""


def _read_whole(mgr: ocp.CheckpointManager, step: int) -> Any:
    """Every array of `step`, read from disk as numpy (what a damaged file fails)."""
    tree = mgr.restore(step, args=ocp.args.StandardRestore())
    return jax.tree.map(lambda x: np.asarray(x), tree)


def step_damage(mgr: ocp.CheckpointManager, step: int) -> str | None:
    """Why `step` cannot be trusted, or None: its files against its manifest where it has one, else (a step
    saved without one) whether every array reads back."""
    try:
        return _manifest_damage(mgr.directory, step)
    except (OSError, ValueError, KeyError):
        pass  # no (readable) manifest: read the step back
    try:
        _read_whole(mgr, step)
    except Exception as exc:  # orbax/tensorstore raise ValueError, OSError, KeyError... for damaged files
        text = str(exc).split("[tensorstore_spec")[0].strip()
        return f"{type(exc).__name__}: {text[:240]}"
    return None


def damage(directory: str | os.PathLike) -> str | None:
    """Why the newest step under `directory` cannot be trusted, or None when it reads back whole."""
    path = absolute(directory)
    mgr = ocp.CheckpointManager(path)
    try:
        step = mgr.latest_step()
        if step is None:
            return "no checkpoint step"
        reason = step_damage(mgr, step)
        return None if reason is None else f"damaged: its newest step {step} does not read back ({reason})"
    finally:
        mgr.close()


def quarantine(mgr: ocp.CheckpointManager, step: int) -> pathlib.Path:
    """Moves a damaged step folder to `<directory>.damaged/<step>-<time>` (kept for inspection); returns it."""
    directory = absolute(mgr.directory)
    target = directory.with_name(directory.name + ".damaged") / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    if jax.process_index() == 0:  # one mover on a shared file system; the others wait for it
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(directory / str(step)), str(target))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"quarantine {directory} {step}")
    mgr.reload()
    return target


def restore_newest_good(mgr: ocp.CheckpointManager, abstract_tree: Any) -> tuple[int, Any]:
    """(step, tree) of the newest step that reads back, restored into `abstract_tree`'s structure.

    Each newer damaged step is reported (a warning naming its folder) and moved aside so that the run can
    write that step again. No step left: DamagedCheckpointError naming the folder to delete."""
    directory = absolute(mgr.directory)
    damaged = []
    for step in sorted(mgr.all_steps(), reverse=True):
        reason = step_damage(mgr, step)
        if reason is None:
            if damaged:
                logging.warning("checkpoint: resuming from step %d under %s instead", step, directory)
            return step, restore(mgr, abstract_tree, step)
        moved = quarantine(mgr, step)
        damaged.append(f"step {step}: {reason}")
        logging.warning("checkpoint: %s is damaged (%s); moved it to %s", directory / str(step), reason, moved)
    raise DamagedCheckpointError(
        f"{directory}: no checkpoint step reads back ({'; '.join(damaged) or 'none left'}); the damaged steps "
        f"are in {directory.with_name(directory.name + '.damaged')}. Delete {directory} to train from the start.")


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
    """Loads the saved `variables` into `model` in place (keeping their shardings); returns the step.
    Without `step`, the newest step that reads back."""
    mgr = manager(directory)
    try:
        state = nnx.state(model, variables)
        if step is None:  # the newest step that reads back (a damaged one is reported and moved aside)
            if mgr.latest_step() is None:
                raise ValueError(f"no checkpoint under {mgr.directory}")
            step, restored = restore_newest_good(mgr, nnx.to_pure_dict(state))
        else:
            restored = restore(mgr, nnx.to_pure_dict(state), step)
    finally:
        mgr.close()
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)
    return step


ADAPTER_RECORD = "lora_config.json"


def adapter_record(model: nnx.Module) -> dict:
    """What `lora_config.json` records beside saved adapters: their layout (rank, alpha, dropout, targets, the
    wrapped modules) and their base (name or path, and the architecture's numbers)."""
    from rallrec_jax.llm import adapters
    from rallrec_jax.llm import lora as lora_lib

    spec = lora_lib.lora_config_of(model)
    if spec is None:
        raise ValueError("model has no nnx.LoRAParam adapters to save")
    return {"format": "rallrec_jax LoRA adapters: orbax steps in this folder",
            "rank": spec.rank, "alpha": spec.alpha, "dropout": spec.dropout, "targets": list(spec.targets),
            "modules": sorted(lora_lib.lora_modules(model)), "base_model": model.config.name_or_path,
            "base_architecture": adapters.architecture(model.config)}


def read_adapter_record(directory: str | os.PathLike) -> tuple[pathlib.Path, dict | None]:
    """(path of `lora_config.json`, its content or None when the folder has none: saved before it existed)."""
    path = absolute(directory) / ADAPTER_RECORD
    if not path.is_file():
        return path, None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); delete it to load the adapters with apply_lora's "
                         "config instead") from None
    for key in ("rank", "alpha", "targets"):
        if key not in record:
            raise ValueError(f"{path}: field {key!r} is missing")
    return path, record


def save_adapters(directory: str | os.PathLike, step: int, model: nnx.Module, max_to_keep: int | None = 3):
    """Only the LoRA adapters (a few MB for an 8B model), and beside them `lora_config.json` (their rank,
    alpha, dropout, targets and base model), so that loading them needs no config."""
    if not jax.tree.leaves(nnx.state(model, nnx.LoRAParam)):
        raise ValueError("model has no nnx.LoRAParam adapters to save")
    record = adapter_record(model)
    folder = save_model_state(directory, step, model, nnx.LoRAParam, max_to_keep)
    if jax.process_index() == 0:
        from rallrec_jax import artifacts

        artifacts.atomic_write_json(folder / ADAPTER_RECORD, record)
    return folder


def restore_adapters(directory: str | os.PathLike, model: nnx.Module, step: int | None = None, *,
                     check_base: bool = True) -> int:
    """Loads adapters saved by `save_adapters` into `model` (the newest step that reads back, or `step`);
    returns the step. A model without adapters gets the recorded layout (`lora_config.json`); one with
    adapters must have it, and the recorded base must be the model's (`check_base=False` accepts the same
    weights under another name): else an error naming the file and field."""
    from rallrec_jax.llm import adapters
    from rallrec_jax.llm import lora as lora_lib

    path, record = read_adapter_record(directory)
    if record is not None:
        adapters.check_base(record.get("base_model"), model, file=path, field="base_model",
                            recorded_architecture=record.get("base_architecture"), check_name=check_base)
        want = lora_lib.LoraConfig(rank=int(record["rank"]), alpha=float(record["alpha"]),
                                   dropout=float(record.get("dropout", 0.0)), targets=tuple(record["targets"]))
        adapters.ensure_lora(model, want, file=path, fields={"rank": "rank", "alpha": "alpha", "targets": "targets"})
    if not jax.tree.leaves(nnx.state(model, nnx.LoRAParam)):
        raise ValueError(f"model has no nnx.LoRAParam adapters and {path} is missing: apply_lora with the saved "
                         "config first")
    return restore_model_state(directory, model, nnx.LoRAParam, step)
