"""LoRA adapters to and from PEFT's folder format, so that a tuned adapter works in transformers + PEFT (and
servers that read PEFT folders) and an adapter tuned there works here, with the same logits.

A PEFT LoRA folder is `adapter_config.json` (`peft_type: LORA`, `r`, `lora_alpha`, `target_modules`,
`lora_dropout`, `base_model_name_or_path`, ...) and `adapter_model.safetensors`, one tensor pair per wrapped
`nn.Linear`: `base_model.model.<module>.lora_A.weight` [r, in] and `....lora_B.weight` [out, r] (torch's
[out, in] layout), where <module> is the transformers module name (`model.layers.3.self_attn.q_proj`,
`lm_head`). PEFT adds `scaling * B(A(dropout(x)))`, scaling = lora_alpha / r (lora_alpha / sqrt(r) with
`use_rslora`), exactly our LoraDense (llm/lora.py) with A = lora_A.T and B = lora_B.T per layer slice of the
stacked [N_layers, ...] adapters. `target_modules` is matched as PEFT matches it (a list: a module name equal to
an entry or ending in "." + it; a string: a regex full-matched on the name), so an adapter that targets some
layers only (a regex, or `layers_to_transform`) is loaded with zero adapters on the other layers, which is
the identity there, as in PEFT.

Options our LoRA cannot reproduce (DoRA, LoRA biases, `modules_to_save`, per-module rank or alpha patterns,
embedding adapters, ...) are errors naming the field, never dropped.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rallrec_jax.assets import split_revision
from rallrec_jax.llm import adapters
from rallrec_jax.llm import lora as lora_lib
from rallrec_jax.llm.model import Dense

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."

# Our dotted module paths <-> transformers module names.
_SUB_TO_HF = {"attn": "self_attn", "mlp": "mlp"}
_HF_TO_SUB = {v: k for k, v in _SUB_TO_HF.items()}
_HF_LAYER = re.compile(r"model\.layers\.(?P<layer>\d+)\.(?P<sub>self_attn|mlp)\.(?P<name>\w+)")
_TENSOR = re.compile(re.escape(PREFIX) + r"(?P<module>.+)\.lora_(?P<ab>[AB])\.weight")

# PEFT options that change what a LoRA computes, with the value under which ours computes the same.
_MUST_BE = {"bias": ("none",), "use_dora": (False, None), "lora_bias": (False, None),
            "fan_in_fan_out": (False, None), "modules_to_save": (None, []), "rank_pattern": ({}, None),
            "alpha_pattern": ({}, None), "trainable_token_indices": (None,), "layer_replication": (None,),
            "target_parameters": (None, []), "use_qalora": (False, None), "alora_invocation_tokens": (None,),
            "exclude_modules": (None, [], "")}


def hf_module(path: str, layer: int | None) -> str:
    """Our module path ("layers.attn.q_proj", layer 3) -> the transformers name ("model.layers.3.self_attn.q_proj")."""
    parts = path.split(".")
    if parts == ["lm_head"]:
        return "lm_head"
    if len(parts) == 3 and parts[0] == "layers" and parts[1] in _SUB_TO_HF and layer is not None:
        return f"model.layers.{layer}.{_SUB_TO_HF[parts[1]]}.{parts[2]}"
    raise ValueError(f"module {path!r} has no transformers name that PEFT knows")


def our_module(name: str) -> tuple[str, int | None] | None:
    """The transformers module name -> (our module path, layer), or None for a module we have no Dense for."""
    if name == "lm_head":
        return "lm_head", None
    m = _HF_LAYER.fullmatch(name)
    if m is None:
        return None
    return f"layers.{_HF_TO_SUB[m['sub']]}.{m['name']}", int(m["layer"])


def _dense_modules(model: nnx.Module) -> dict[str, Dense | lora_lib.LoraDense]:
    """Every projection of the model (wrapped or not) by our dotted path; the base Dense inside a LoraDense
    is its wrapper's."""
    out = {}
    for path, node in nnx.iter_graph(model):
        if not path or not isinstance(path[-1], str):
            continue
        if isinstance(node, lora_lib.LoraDense) or (isinstance(node, Dense) and path[-1] != "base"):
            out[".".join(map(str, path))] = node
    return out


def _in_out(node) -> tuple[int, int]:
    base = node.base if isinstance(node, lora_lib.LoraDense) else node
    return base.in_features, base.out_features


def _peft_matches(config: Mapping[str, Any], key: str) -> bool:
    """PEFT's `check_target_module_exists` for the options we accept (target_modules, layers_to_transform,
    layers_pattern)."""
    targets = config.get("target_modules")
    if isinstance(targets, str):
        return re.fullmatch(targets, key) is not None
    found = key in targets or any(key.endswith(f".{t}") for t in targets)
    layers = config.get("layers_to_transform")
    if found and layers is not None and layers != []:
        patterns = config.get("layers_pattern") or None
        if patterns is None:
            m = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", key)
        else:
            m = None
            for pattern in [patterns] if isinstance(patterns, str) else patterns:
                m = re.match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", key)
                if m is not None:
                    break
        if m is None:
            return False
        index = int(m["idx"])
        return index == layers if isinstance(layers, int) else index in layers
    return found


def read_adapter_config(folder: str | os.PathLike) -> tuple[pathlib.Path, dict[str, Any]]:
    """(path of adapter_config.json, its content) of a PEFT folder, checked to be a LoRA we can reproduce."""
    path = pathlib.Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{path} not found: {folder} is not a PEFT adapter folder")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{path}: peft_type={config.get('peft_type')!r}; only LORA adapters can be loaded")
    for key in ("r", "lora_alpha", "target_modules"):
        if config.get(key) in (None, "", []):
            raise ValueError(f"{path}: field {key!r} is missing or empty")
    if not isinstance(config["r"], int) or config["r"] < 1:
        raise ValueError(f"{path}: r={config['r']!r} must be a positive integer")
    for key, allowed in _MUST_BE.items():
        if key in config and config[key] not in allowed:
            raise ValueError(f"{path}: {key}={config[key]!r} is not supported (our LoRA needs {allowed[0]!r}); "
                             "merge that adapter in PEFT (merge_and_unload) and load the merged model instead")
    task = config.get("task_type")
    if task not in (None, "CAUSAL_LM"):
        raise ValueError(f"{path}: task_type={task!r}; only CAUSAL_LM adapters fit a decoder")
    return path, config


def _weights_file(folder: pathlib.Path) -> pathlib.Path:
    path = folder / WEIGHTS_FILE
    if path.is_file():
        return path
    if (folder / "adapter_model.bin").is_file():
        raise ValueError(f"{folder / 'adapter_model.bin'}: a pickled torch file, which this library reads without "
                         "torch only as safetensors; convert it once with torch installed: python -c \"import torch, "
                         "safetensors.torch as s; s.save_file(torch.load('adapter_model.bin'), "
                         "'adapter_model.safetensors')\"")
    raise ValueError(f"{path} not found: the PEFT folder {folder} holds no adapter weights")


def load_peft(folder: str | os.PathLike, model: nnx.Module, *, check_base: bool = True) -> nnx.Module:
    """Loads the PEFT LoRA adapter in `folder` (a local folder, or a hub name fetched into the HF cache) into
    `model` and returns it (eval mode, adapters not merged: `lora.merge_lora` folds them).

    A model without adapters gets the file's layout (rank, alpha, targets, dropout); one with adapters must
    already have it. The file's base (`base_model_name_or_path`) must be the model's (`check_base=False`
    accepts the same weights under another name). Every targeted module's two tensors must be present with
    their shapes, and every tensor must belong to a targeted module: else an error naming the file and tensor."""
    folder = pathlib.Path(folder).expanduser()
    if not folder.is_dir():
        from rallrec_jax import assets

        folder = assets.resolve_model(str(folder), kind="adapter")
    config_path, config = read_adapter_config(folder)
    adapters.check_base(config.get("base_model_name_or_path"), model, file=config_path,
                        field="base_model_name_or_path", check_name=check_base)
    rank = int(config["r"])
    alpha = float(config["lora_alpha"])
    if config.get("use_rslora"):  # PEFT scales by alpha / sqrt(r); ours by alpha / r
        alpha = alpha * math.sqrt(rank)
    dropout = float(config.get("lora_dropout") or 0.0)

    cfg = model.config
    modules = _dense_modules(model)
    targeted: dict[str, set[int | None]] = {}  # our path -> layers it is targeted in
    for path in modules:
        layers = [None] if not path.startswith("layers.") else range(cfg.num_layers)
        for layer in layers:
            if _peft_matches(config, hf_module(path, layer)):
                targeted.setdefault(path, set()).add(layer)
    for other in ("model.embed_tokens", "lm_head"):
        if our_module(other) is None or our_module(other)[0] not in modules:
            if _peft_matches(config, other):
                raise ValueError(f"{config_path}: target_modules={config['target_modules']!r} targets {other!r}, "
                                 "which has no adapter-able projection in this model (an embedding, or a head tied "
                                 "to it): not supported")
    if not targeted:
        raise ValueError(f"{config_path}: target_modules={config['target_modules']!r} matches no projection of "
                         f"the model (its projections: {sorted({p.rsplit('.', 1)[-1] for p in modules})})")

    weights_path = _weights_file(folder)
    from safetensors import safe_open

    want: dict[str, tuple[int, int]] = {}  # tensor name -> shape
    for path, layers in targeted.items():
        fan_in, fan_out = _in_out(modules[path])
        for layer in layers:
            name = PREFIX + hf_module(path, layer)
            want[name + ".lora_A.weight"] = (rank, fan_in)
            want[name + ".lora_B.weight"] = (fan_out, rank)
    arrays: dict[str, np.ndarray] = {}
    with safe_open(str(weights_path), framework="numpy") as f:
        for key in f.keys():
            m = _TENSOR.fullmatch(key)
            if m is None:
                raise ValueError(f"{weights_path}: tensor {key!r} is not a LoRA A/B weight that this library can "
                                 "load (expected base_model.model.<module>.lora_A.weight / lora_B.weight)")
            if key not in want:
                raise ValueError(f"{weights_path}: tensor {key!r} is for module {m['module']!r}, which "
                                 f"{config_path.name} target_modules={config['target_modules']!r} does not target "
                                 "in this model")
            array = f.get_tensor(key)
            if tuple(array.shape) != want[key]:
                raise ValueError(f"{weights_path}: tensor {key!r} has shape {tuple(array.shape)}, expected "
                                 f"{want[key]} (r={rank} from {config_path.name} and the model's projection)")
            arrays[key] = array
    missing = sorted(set(want) - set(arrays))
    if missing:
        raise ValueError(f"{weights_path}: lacks tensor {missing[0]!r}"
                         + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                         + f" (targeted by {config_path.name} target_modules={config['target_modules']!r})")

    names = tuple(sorted({p.rsplit(".", 1)[-1] for p in targeted}))
    untargeted = [p for p in modules if p.rsplit(".", 1)[-1] in names and p not in targeted]
    if untargeted:  # e.g. a regex that targets self_attn.q_proj but also names another module's attribute
        raise ValueError(f"{config_path}: target_modules={config['target_modules']!r} targets some projections "
                         f"named {names} but not {untargeted}; our adapters wrap every projection of a name")
    want_cfg = lora_lib.LoraConfig(rank=rank, alpha=alpha, dropout=dropout, targets=names)
    adapters.ensure_lora(model, want_cfg, file=config_path,
                         fields={"rank": "r", "alpha": "lora_alpha", "targets": "target_modules"})
    for path, node in lora_lib.lora_modules(model).items():
        a_var, b_var = node.lora_a, node.lora_b
        a = np.zeros(a_var.get_value().shape, np.float32)  # [N,] in, r
        b = np.zeros(b_var.get_value().shape, np.float32)  # [N,] r, out
        for layer in targeted[path]:
            name = PREFIX + hf_module(path, layer)
            if layer is None:
                a[...], b[...] = arrays[name + ".lora_A.weight"].T, arrays[name + ".lora_B.weight"].T
            else:
                a[layer], b[layer] = arrays[name + ".lora_A.weight"].T, arrays[name + ".lora_B.weight"].T
        for var, value in ((a_var, a), (b_var, b)):
            old = var.get_value()
            value = value.astype(old.dtype)
            sharding = getattr(old, "sharding", None)
            # Each process fills its own shards from the full host copy (device_put cannot reach another
            # process's devices); on one process this is a device_put.
            var.set_value(jnp.asarray(value) if sharding is None else
                          jax.make_array_from_callback(value.shape, sharding, lambda index, v=value: v[index]))
    model.eval()
    return model


def peft_config(model: nnx.Module, base_model: str | None = None) -> dict[str, Any]:
    """adapter_config.json for the model's adapters (as peft 0.21 writes it, fields ours leaves at their
    defaults included)."""
    spec = lora_lib.lora_config_of(model)
    if spec is None:
        raise ValueError("the model has no LoRA adapters to export (lora.apply_lora, then tune)")
    name, revision = split_revision(base_model or model.config.name_or_path)
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": name or None,
        "revision": revision, "r": spec.rank,
        "lora_alpha": int(spec.alpha) if float(spec.alpha).is_integer() else spec.alpha, "lora_dropout": spec.dropout,
        "target_modules": list(spec.targets), "bias": "none", "fan_in_fan_out": False, "inference_mode": True,
        "init_lora_weights": True, "modules_to_save": None, "layers_to_transform": None, "layers_pattern": None,
        "rank_pattern": {}, "alpha_pattern": {}, "use_rslora": False, "use_dora": False, "lora_bias": False,
    }


def peft_tensors(model: nnx.Module) -> dict[str, np.ndarray]:
    """PEFT tensor name -> array in PEFT's layout (lora_A [r, in], lora_B [out, r]) for every layer slice."""
    out: dict[str, np.ndarray] = {}
    for path, node in sorted(lora_lib.lora_modules(model).items()):
        a = np.asarray(jax.device_get(node.lora_a.get_value()))  # [N,] in, r
        b = np.asarray(jax.device_get(node.lora_b.get_value()))  # [N,] r, out
        slices = [(None, a, b)] if a.ndim == 2 else [(i, a[i], b[i]) for i in range(a.shape[0])]
        for layer, a_i, b_i in slices:
            name = PREFIX + hf_module(path, layer)
            out[name + ".lora_A.weight"] = np.ascontiguousarray(a_i.T)
            out[name + ".lora_B.weight"] = np.ascontiguousarray(b_i.T)
    return out


def export_peft(model: nnx.Module, folder: str | os.PathLike, *, base_model: str | None = None) -> pathlib.Path:
    """Writes the model's adapters as a PEFT LoRA folder that `peft.PeftModel.from_pretrained(<the transformers
    model of the same base>, folder)` loads with the same logits. `base_model` overrides the recorded base
    (default: the model's `name_or_path`, e.g. the hub name it was loaded by). Returns the folder."""
    from rallrec_jax import artifacts
    from rallrec_jax.llm.export import save_safetensors

    config = peft_config(model, base_model)
    folder = pathlib.Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors(folder / WEIGHTS_FILE, peft_tensors(model))
    artifacts.atomic_write_json(folder / CONFIG_FILE, config, indent=2)
    return folder
