"""A model (its LoRA adapters merged into the base) written as a transformers folder: config.json,
safetensors weights in transformers' names and [out, in] layout, and the tokenizer's files, so that
`AutoModelForCausalLM.from_pretrained(folder)` and `AutoTokenizer.from_pretrained(folder)` load it
and give the same logits. A GGUF base is written dequantised (its Llama-3.1 `rope_freqs` as the llama3
`rope_scaling` they were verified to encode, llm/config.py).

Tensor names are the inverse of the loader's table (`weights.HF_TO_PARAM`): each name written is mapped back
through it and must land on the parameter it came from, so the two tables cannot drift apart. Weights are
produced one layer slice at a time on the host and written in shards of at most `max_shard_bytes`.
"""
from __future__ import annotations

import fnmatch
import json
import os
import pathlib
import re
import shutil
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rallrec_jax import artifacts
from rallrec_jax.llm import lora as lora_lib
from rallrec_jax.llm.config import LlmConfig
from rallrec_jax.llm.weights import hf_to_param

# Our parameter path (a LoRA-wrapped layer's base kernel by its wrapper's path) -> transformers name; {layer}
# is filled with each slice of a stacked parameter.
PARAM_TO_HF: tuple[tuple[str, str], ...] = (
    (r"embedding", "model.embed_tokens.weight"),
    (r"layers\.attn\.(?P<m>[qkvo])_proj\.(?P<w>kernel|bias)", "model.layers.{layer}.self_attn.{m}_proj.{w}"),
    (r"layers\.mlp\.(?P<m>gate|up|down)_proj\.(?P<w>kernel|bias)", "model.layers.{layer}.mlp.{m}_proj.{w}"),
    (r"layers\.input_norm\.scale", "model.layers.{layer}.input_layernorm.weight"),
    (r"layers\.post_attn_norm\.scale", "model.layers.{layer}.post_attention_layernorm.weight"),
    (r"final_norm\.scale", "model.norm.weight"),
    (r"lm_head\.kernel", "lm_head.weight"),
)

# Files of an HF folder that belong to its tokenizer (and generation defaults), copied as they are.
TOKENIZER_FILES = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json", "*.model", "*.tiktoken", "vocab.json", "vocab.txt", "merges.txt",
                   "generation_config.json")
_DTYPES = {"float32": np.float32, "bfloat16": jnp.bfloat16, "float16": np.float16}


def save_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray]) -> pathlib.Path:
    """Writes a safetensors file atomically (beside, then renamed), with transformers' {"format": "pt"}."""
    from safetensors.numpy import save_file

    with artifacts.atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
    return pathlib.Path(path)


def hf_name(path: str, layer: int | None) -> str:
    """Our parameter path -> its transformers tensor name, checked against the loader's table."""
    for pattern, template in PARAM_TO_HF:
        m = re.fullmatch(pattern, path)
        if m:
            groups = {k: ("weight" if v == "kernel" else v) for k, v in m.groupdict().items()}
            name = template.format(layer=layer, **groups)
            back = hf_to_param(name)
            if back is None or back.path != path or back.layer != layer:
                raise AssertionError(f"export name {name!r} for {path!r} maps back to {back}")
            return name
    raise ValueError(f"parameter {path!r} has no transformers name")


class _Tensor:
    """One tensor to write: its name, bytes, and how to make it (on the host, when its shard is written)."""

    def __init__(self, name: str, shape: tuple[int, ...], dtype, make: Callable[[], np.ndarray]):
        self.name, self.shape, self.make = name, shape, make
        self.nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize


def _host(x) -> np.ndarray:
    return np.asarray(jax.device_get(x))


def merged_tensors(model: nnx.Module, dtype=None) -> list[_Tensor]:
    """Every tensor of the merged model in transformers' names and layout (kernels [out, in]), lazily: a LoRA
    layer's kernel is W + (alpha / r) A @ B, folded in float32 per layer slice."""
    cfg: LlmConfig = model.config
    wrapped = lora_lib.lora_modules(model)
    out: list[_Tensor] = []
    state = nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))
    for keys, var in nnx.to_flat_state(state):
        full = ".".join(map(str, keys))
        module = full.rsplit(".", 1)[0]
        path = full.replace(".base.", ".") if module.endswith(".base") else full
        owner = module[: -len(".base")] if module.endswith(".base") else None
        lora = wrapped.get(owner) if owner and full.endswith(".kernel") else None
        value = var.get_value()
        out_dtype = dtype or value.dtype
        stacked = path.startswith("layers.")
        transpose = path.endswith(".kernel")
        for layer in (range(cfg.num_layers) if stacked else [None]):
            shape = tuple(value.shape[1:] if stacked else value.shape)
            shape = shape[::-1] if transpose else shape

            def make(value=value, layer=layer, lora=lora, transpose=transpose, out_dtype=out_dtype):
                w = _host(value if layer is None else value[layer])
                if lora is not None:  # W [in, out] + scale * A [in, r] @ B [r, out]
                    a = _host(lora.lora_a.get_value() if layer is None else lora.lora_a.get_value()[layer])
                    b = _host(lora.lora_b.get_value() if layer is None else lora.lora_b.get_value()[layer])
                    w = w.astype(np.float32) + np.float32(lora.scale) * (a.astype(np.float32) @ b.astype(np.float32))
                return (w.T if transpose else w).astype(out_dtype)

            out.append(_Tensor(hf_name(path, layer), shape, out_dtype, make))
    return out


def _tokenizer_files(source, folder: pathlib.Path) -> None:
    """The tokenizer's files into `folder`: copied from an HF folder, or saved from a tokenizer (a GGUF file's,
    built from its metadata, or any transformers tokenizer)."""
    if not isinstance(source, (str, os.PathLike)):
        source.save_pretrained(str(folder))
        return
    from rallrec_jax import assets

    path = assets.resolve_model(source)
    if path.suffix == ".gguf":
        from rallrec_jax.llm.tokenizer import load_tokenizer

        load_tokenizer(path).save_pretrained(str(folder))
        return
    copied = [f for f in sorted(path.iterdir())
              if f.is_file() and any(fnmatch.fnmatch(f.name, p) for p in TOKENIZER_FILES)]
    if not any(f.name.startswith("tokenizer") or f.suffix == ".model" for f in copied):
        raise ValueError(f"{path} holds no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...): pass "
                         "tokenizer= a folder or tokenizer that has them")
    for f in copied:
        shutil.copyfile(f, folder / f.name)


def export_merged(model: nnx.Module, folder: str | os.PathLike, *, tokenizer=None, dtype: str | None = None,
                  max_shard_bytes: int = 5 * 2**30) -> pathlib.Path:
    """Writes `model` with its adapters merged (the model itself is left as it is) as a transformers folder.

    `tokenizer`: an HF folder, .gguf file or hub name whose tokenizer files to write, or a tokenizer object;
    default: the model's own source (`config.name_or_path`). `dtype`: the weights' dtype ("float32",
    "bfloat16", "float16"; default the parameters'). Returns the folder."""
    cfg: LlmConfig = model.config
    if dtype is not None and dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} not in {sorted(_DTYPES)}")
    config = cfg.to_hf()
    out_dtype = _DTYPES[dtype] if dtype else None
    if dtype:
        config["dtype"] = config["torch_dtype"] = dtype
    source = cfg.name_or_path if tokenizer is None else tokenizer
    if not source:
        raise ValueError("the model records no source (config.name_or_path) to take the tokenizer from: pass "
                         "tokenizer= an HF folder, .gguf file or tokenizer")
    folder = pathlib.Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    _tokenizer_files(source, folder)

    tensors = merged_tensors(model, out_dtype)
    shards: list[list[_Tensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    for stale in list(folder.glob("model*.safetensors")) + list(folder.glob("model.safetensors.index.json")):
        stale.unlink()  # an earlier export's shards would be read with this one
    if len(shards) == 1:
        save_safetensors(folder / "model.safetensors", {t.name: t.make() for t in shards[0]})
    else:
        weight_map = {}
        for i, shard in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_safetensors(folder / name, {t.name: t.make() for t in shard})
            weight_map.update({t.name: name for t in shard})
        total = sum(t.nbytes for t in tensors)
        artifacts.atomic_write_json(folder / "model.safetensors.index.json",
                                    {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    artifacts.atomic_write_text(folder / "config.json", json.dumps(config, indent=2))
    return folder
