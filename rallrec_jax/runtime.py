"""A config for the machine at hand, for the Colab notebook and other places that have no command line.

`config_for_runtime(platform)` says which config file and which field overrides suit a jax platform:

    cpu   the quickstart as it is (float32: bfloat16 pays on accelerators, not on CPU)
    gpu   the quickstart in bfloat16 compute on a GPU mesh, with the paper's item descriptions
    tpu   the same on a TPU mesh (every chip data-parallel)

Parameters stay float32 on every platform: the quickstart's model is small enough, and LoRA tuning keeps its
precision. `load_config(path, overrides)` builds the ConfigDict; an override naming a field the config does not
have is an error, never a silently added field.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import sys
from collections.abc import Mapping
from typing import Any

import ml_collections

PLATFORMS = ("cpu", "gpu", "tpu")


def configs_dir() -> pathlib.Path:
    """The `configs` package's folder (shipped with the distribution; a checkout's root puts it on the path)."""
    import configs

    return pathlib.Path(configs.__file__).resolve().parent


def config_for_runtime(platform: str) -> tuple[str, dict[str, Any]]:
    """(absolute path of the config file, {dotted field: value}) for a jax platform ('cpu', 'gpu', 'tpu';
    `jax.default_backend()` names the one at hand)."""
    name = str(platform).lower()
    if name not in PLATFORMS:
        raise ValueError(f"config_for_runtime: no config for platform {platform!r}; known: {PLATFORMS} "
                         "(jax.default_backend() names this machine's; install the cuda12 or tpu extra if jax "
                         "does not see the accelerator)")
    path = str(configs_dir() / "quickstart.py")
    if name == "cpu":
        return path, {}
    return path, {
        "mesh": {"data": -1, "fsdp": 1, "tensor": 1, "platform": name},
        "model.dtype": "bfloat16",
        "reasoning.dtype": "bfloat16",
        "retrieval.use_descriptions": True,  # the paper's [e_title || e_desc]: affordable on an accelerator
    }


def load_config(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None,
                variant: str = "") -> ml_collections.ConfigDict:
    """The ConfigDict of a configs/*.py file's get_config(variant), with `overrides` ({dotted field: value}) set."""
    path = pathlib.Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    root = str(path.parent.parent)  # config files import `from configs import ...`
    if root not in sys.path:
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(f"_rallrec_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(variant) if variant else module.get_config()
    for dotted, value in (overrides or {}).items():
        *parents, leaf = dotted.split(".")
        node = config
        for i, key in enumerate(parents + [leaf]):
            if key not in node:
                raise KeyError(f"{path}: the override {dotted!r} names no field of the config "
                               f"({'.'.join((parents + [leaf])[:i + 1])} is absent)")
            if i < len(parents):
                node = node[key]
        node[leaf] = ml_collections.ConfigDict(value) if isinstance(value, Mapping) else value
    return config
