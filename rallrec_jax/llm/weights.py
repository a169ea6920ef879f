"""Checkpoint tensors -> model parameters: HF safetensors folders and GGUF files.

One regex table (`HF_TO_PARAM`) maps HF tensor names to our parameter paths; GGUF names are first renamed
to HF names (`GGUF_TO_HF`), so both formats share it. A per-layer tensor ("model.layers.7....") is one
slice of a stacked parameter ([N_layers, ...], see `llm/model.py`): the stacked buffer is created once in
its sharding and each layer's tensor is written into its slice in place as it streams by, so only one
checkpoint tensor is on the host at a time and the model is never held twice. Every shape or name mismatch,
missing tensor (a missing layer too), duplicate or unused tensor is an error naming the tensor.
"""
from __future__ import annotations

import functools
import json
import os
import pathlib
import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from rallrec_jax.llm.config import LlmConfig
from rallrec_jax.llm.model import Llm, abstract_model
from rallrec_jax.llm.sharding import fitted_sharding, logical_axes

# (HF name regex, our parameter path template, transpose [out, in] -> [in, out]). A `layer` group makes the
# tensor that layer's slice of the stacked parameter.
_L = r"model\.layers\.(?P<layer>\d+)"
HF_TO_PARAM: tuple[tuple[str, str, bool], ...] = (
    (r"model\.embed_tokens\.weight", r"embedding", False),
    (_L + r"\.self_attn\.(?P<m>[qkvo])_proj\.weight", r"layers.attn.\g<m>_proj.kernel", True),
    (_L + r"\.self_attn\.(?P<m>[qkvo])_proj\.bias", r"layers.attn.\g<m>_proj.bias", False),
    (_L + r"\.mlp\.(?P<m>gate|up|down)_proj\.weight", r"layers.mlp.\g<m>_proj.kernel", True),
    (_L + r"\.mlp\.(?P<m>gate|up|down)_proj\.bias", r"layers.mlp.\g<m>_proj.bias", False),
    (_L + r"\.input_layernorm\.weight", r"layers.input_norm.scale", False),
    (_L + r"\.post_attention_layernorm\.weight", r"layers.post_attn_norm.scale", False),
    (r"model\.norm\.weight", r"final_norm.scale", False),
    (r"lm_head\.weight", r"lm_head.kernel", True),
)

# HF buffers that some checkpoints carry and that hold no parameters.
_IGNORED_HF = (r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq", r"model\.rotary_emb\.inv_freq")

# GGUF block tensor -> HF module under model.layers.<i>; the attention projections may carry biases (Qwen2).
_GGUF_BLOCK_BIASED = (("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"),
                      ("attn_v", "self_attn.v_proj"), ("attn_output", "self_attn.o_proj"))
_GGUF_BLOCK = (("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"), ("ffn_down", "mlp.down_proj"),
               ("attn_norm", "input_layernorm"), ("ffn_norm", "post_attention_layernorm"))

GGUF_TO_HF: tuple[tuple[str, str], ...] = (
    (r"token_embd\.weight", r"model.embed_tokens.weight"),
    *((rf"blk\.(\d+)\.{g}\.(weight|bias)", rf"model.layers.\1.{h}.\2") for g, h in _GGUF_BLOCK_BIASED),
    *((rf"blk\.(\d+)\.{g}\.weight", rf"model.layers.\1.{h}.weight") for g, h in _GGUF_BLOCK),
    (r"output_norm\.weight", r"model.norm.weight"),
    (r"output\.weight", r"lm_head.weight"),
)


class ParamTarget(NamedTuple):
    path: str  # our dotted parameter path
    layer: int | None  # the slice of a stacked parameter, None for unstacked ones
    transpose: bool


def hf_to_param(name: str) -> ParamTarget | None:
    """HF tensor name -> where it goes, or None when no rule matches."""
    for pattern, template, transpose in HF_TO_PARAM:
        m = re.fullmatch(pattern, name)
        if m:
            layer = m.groupdict().get("layer")
            return ParamTarget(m.expand(template), None if layer is None else int(layer), transpose)
    return None


def gguf_to_hf(name: str) -> str | None:
    for pattern, template in GGUF_TO_HF:
        m = re.fullmatch(pattern, name)
        if m:
            return m.expand(template)
    return None


@functools.lru_cache(maxsize=None)
def _layer_writer(sharding: NamedSharding | None):
    """buffer [N, ...], slice [...], layer -> buffer with the slice written, in place (the buffer is donated)."""
    fn = lambda buf, x, i: jax.lax.dynamic_update_index_in_dim(buf, x.astype(buf.dtype), i, 0)  # noqa: E731
    return jax.jit(fn, donate_argnums=0, out_shardings=sharding)


def _put(array: np.ndarray, mesh: Mesh | None, axes) -> jax.Array:
    if mesh is None:
        return jnp.asarray(array)
    return jax.device_put(array, fitted_sharding(mesh, axes, array.shape))


def _zeros(shape, dtype, mesh: Mesh | None, axes) -> jax.Array:
    if mesh is None:
        return jnp.zeros(shape, dtype)
    return jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=fitted_sharding(mesh, axes, shape))()


def load_params(model: Llm, tensors: Iterable[tuple[str, np.ndarray]], mesh: Mesh | None = None) -> Llm:
    """Fills an (abstract or concrete) model from (HF name, array) pairs; returns the concrete model.

    Each array is transposed if needed, checked against its parameter's (per-layer) shape, cast to its dtype
    and put straight into its sharding (the logical axes mapped through `parallel`), one at a time."""
    cfg: LlmConfig = model.config
    graphdef, state = nnx.split(model)
    flat = {".".join(str(p) for p in path): (path, var) for path, var in nnx.to_flat_state(state)}
    filled: dict[str, jax.Array] = {}
    stacked: dict[str, jax.Array] = {}  # path -> [N, ...] buffer being filled
    layers_done: dict[str, set[int]] = {}
    source: dict[str, str] = {}  # path -> an HF name that fed it, for the missing-layer message
    for name, array in tensors:
        if any(re.fullmatch(p, name) for p in _IGNORED_HF):
            continue
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue  # some tied checkpoints store a copy of the embedding.
        target = hf_to_param(name)
        if target is None or target.path not in flat:
            raise ValueError(f"tensor {name!r} has no matching model parameter"
                             + ("" if target is None else f" (mapped to {target.path!r})"))
        path, layer = target.path, target.layer
        var = flat[path][1]
        full = tuple(var.get_value().shape)
        dtype = var.get_value().dtype
        axes = logical_axes(var, len(full))
        array = np.asarray(array)
        if target.transpose:
            array = array.T
        if layer is None:
            if path in filled:
                raise ValueError(f"tensor {name!r} given twice (parameter {path!r})")
            want, where = full, f"parameter {path!r}"
        else:
            if layer >= cfg.num_layers:
                raise ValueError(f"tensor {name!r} is for layer {layer}, but the config has {cfg.num_layers} layers")
            if layer in layers_done.setdefault(path, set()):
                raise ValueError(f"tensor {name!r} given twice (parameter {path!r}, layer {layer})")
            want, where = full[1:], f"parameter {path!r} (layer {layer} of {full})"
        if tuple(array.shape) != want:
            raise ValueError(f"tensor {name!r} has shape {tuple(array.shape)}, {where} expects {want}")
        array = array.astype(dtype)
        if layer is None:
            filled[path] = _put(array, mesh, axes)
        else:
            buf = stacked.get(path)
            if buf is None:
                buf = _zeros(full, dtype, mesh, axes)
            sharding = fitted_sharding(mesh, axes, full) if mesh is not None else None
            stacked[path] = _layer_writer(sharding)(buf, _put(array, mesh, axes[1:]), jnp.int32(layer))
            layers_done[path].add(layer)
            source[path] = name
        del array
    missing = sorted(p for p in flat if p not in filled and p not in stacked)
    for path in sorted(stacked):
        absent = sorted(set(range(cfg.num_layers)) - layers_done[path])
        if absent:
            example = re.sub(r"layers\.\d+", f"layers.{absent[0]}", source[path])
            missing.append(f"{path} layers {absent} (e.g. {example!r})")
    if missing:
        raise ValueError(f"checkpoint lacks tensors for parameters {missing[:8]}"
                         + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))
    values = {**filled, **stacked}
    new_state = nnx.from_flat_state([(flat[k][0], flat[k][1].replace(v)) for k, v in values.items()])
    return nnx.merge(graphdef, new_state)


# ----------------------------------------------------------------------------- HF folders
def _safetensors_files(folder: pathlib.Path) -> list[pathlib.Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [folder / f for f in sorted(set(weight_map.values()))]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    raise ValueError(f"{folder} holds neither model.safetensors nor model.safetensors.index.json")


def iter_safetensors(folder: str | os.PathLike) -> Iterator[tuple[str, np.ndarray]]:
    """Streams (name, numpy array) from an HF folder, one tensor at a time."""
    from safetensors import safe_open

    for path in _safetensors_files(pathlib.Path(folder)):
        with safe_open(str(path), framework="numpy") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


def load_hf_config(folder: str | os.PathLike, **dtypes) -> LlmConfig:
    path = pathlib.Path(folder) / "config.json"
    if not path.is_file():
        raise ValueError(f"{path} not found")
    return LlmConfig.from_hf(json.loads(path.read_text()), **dtypes)


def load_hf(folder: str | os.PathLike, mesh: Mesh | None = None, param_dtype: str = "float32",
            dtype: str = "float32", attention_impl: str = "auto", name_or_path: str | None = None) -> Llm:
    """Model from an HF folder (config.json + safetensors, single file or sharded). `name_or_path` is what its
    config records as its origin (default: the folder), e.g. the hub name it was fetched by."""
    cfg = load_hf_config(folder, param_dtype=param_dtype, dtype=dtype).replace(
        attention_impl=attention_impl, name_or_path=name_or_path or str(pathlib.Path(folder).resolve()))
    return load_params(abstract_model(cfg), iter_safetensors(folder), mesh)


# ----------------------------------------------------------------------------- GGUF
def unpermute_rotary(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's interleaved rotary row order of Q/K weights ([out, in]) back to HF's half-split order."""
    return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def iter_gguf(reader, cfg: LlmConfig) -> Iterator[tuple[str, np.ndarray]]:
    """Streams (HF name, float32 array [out, in]) from a gguf.GGUFReader, dequantising one tensor at a time."""
    from gguf.quants import dequantize

    for t in reader.tensors:
        if t.name == "rope_freqs.weight":  # Llama 3.1's rope divisors: read by LlmConfig.from_gguf
            if cfg.rope_freq_factors is None:
                raise ValueError("GGUF tensor 'rope_freqs.weight' found, but the config was not read from this file "
                                 "(LlmConfig.from_gguf reads it)")
            continue
        hf = gguf_to_hf(t.name)
        if hf is None:
            raise ValueError(f"GGUF tensor {t.name!r} has no matching model parameter")
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(tuple(reversed(t.shape.tolist())))
        if cfg.model_type == "llama" and re.search(r"\.self_attn\.[qk]_proj\.", hf):
            w = unpermute_rotary(w, cfg.num_heads if ".q_proj." in hf else cfg.num_kv_heads)
        yield hf, w


def open_gguf(path: str | os.PathLike):
    """A gguf.GGUFReader over `path`; a file that is not GGUF, or is cut short, is an error naming it and the fix
    (the reader's own messages, "GGUF magic invalid" or a failed reshape, name neither)."""
    import gguf

    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"GGUF file {path} not found")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as exc:  # ValueError, IndexError, struct/numpy errors: the bytes are not what GGUF promises
        size = path.stat().st_size
        with open(path, "rb") as f:
            magic = f.read(4)
        what = (f"it does not start with the GGUF magic bytes (it starts with {magic!r}): not a GGUF file"
                if magic != b"GGUF" else
                "its header promises more than the file holds: truncated (an interrupted download or copy?) or "
                "damaged")
        raise ValueError(f"{path}: unreadable GGUF model file ({size:,} bytes): {what} [{type(exc).__name__}: "
                         f"{exc}]. Download or copy it again, or point the config's model path (model.path, "
                         "retrieval.llm_path, reasoning.llm_path) at a good copy.") from None


def load_gguf(path: str | os.PathLike, mesh: Mesh | None = None, param_dtype: str = "float32",
              dtype: str = "float32", attention_impl: str = "auto", name_or_path: str | None = None) -> Llm:
    """Model from a GGUF file (quantised tensors are dequantised to float32 first; Llama 3.1's `rope_freqs`
    divisors are applied as llama.cpp applies them)."""
    reader = open_gguf(path)
    cfg = LlmConfig.from_gguf(reader, param_dtype=param_dtype, dtype=dtype).replace(
        attention_impl=attention_impl, name_or_path=name_or_path or str(pathlib.Path(path).resolve()))
    return load_params(abstract_model(cfg), iter_gguf(reader, cfg), mesh)


def load(path: str | os.PathLike, mesh: Mesh | None = None, **kw) -> Llm:
    """HF folder or .gguf file, by what `path` is; a hub name ("org/model", "org/model@revision") is fetched
    into the Hugging Face cache (assets.resolve_model) and recorded as the model's `name_or_path`."""
    from rallrec_jax import assets

    p = assets.resolve_model(path)
    kw.setdefault("name_or_path", str(p) if pathlib.Path(path).expanduser().exists() else str(path))
    return load_gguf(p, mesh, **kw) if p.suffix == ".gguf" else load_hf(p, mesh, **kw)


