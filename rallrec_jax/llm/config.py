"""LlmConfig: the few numbers that define a Llama-family or Qwen2 decoder.

Built from an HF ``config.json`` dict (transformers 4 ``rope_theta``/``rope_scaling`` or transformers 5
``rope_parameters``) or from GGUF metadata, so the same model code serves SmolLM2, Llama 2/3/3.1,
DeepSeek-R1-Distill-Llama and Qwen2 checkpoints.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
ATTENTION_IMPLS = ("auto", "einsum", "dot_product")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """rope_scaling of type "llama3" (Llama 3.1+) or "linear"; hashable so configs stay static under jit."""

    rope_type: str
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True)
class LlmConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2: biases on q/k/v only.
    o_bias: bool = False  # Llama `attention_bias=True` also puts one on o_proj.
    mlp_bias: bool = False
    model_type: str = "llama"
    param_dtype: str = "float32"
    dtype: str = "float32"  # compute dtype
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    # "auto": cuDNN flash attention (jax.nn.dot_product_attention) on GPU where dtype and head size allow,
    # else the query-chunked einsums; "einsum" or "dot_product" force one (see llm/attention.py).
    attention_impl: str = "auto"

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        for field in ("param_dtype", "dtype"):
            if getattr(self, field) not in _DTYPES:
                raise ValueError(f"{field}={getattr(self, field)!r} not in {sorted(_DTYPES)}")
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"model_type={self.model_type!r} not in {SUPPORTED_MODEL_TYPES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl={self.attention_impl!r} not in {ATTENTION_IMPLS}")

    @property
    def jnp_param_dtype(self):
        return _DTYPES[self.param_dtype]

    @property
    def jnp_dtype(self):
        return _DTYPES[self.dtype]

    def replace(self, **kw: Any) -> "LlmConfig":
        return dataclasses.replace(self, **kw)

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_hf(cls, d: Mapping[str, Any], param_dtype: str = "float32", dtype: str = "float32") -> "LlmConfig":
        """From an HF config.json dict (LlamaForCausalLM, Qwen2ForCausalLM)."""
        model_type = d.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"config.json model_type={model_type!r}: supported are {SUPPORTED_MODEL_TYPES}")
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            if key not in d:
                raise ValueError(f"config.json lacks required field {key!r}")
        if d.get("use_sliding_window"):
            raise ValueError("config.json use_sliding_window=true: sliding-window attention is not supported")
        heads = int(d["num_attention_heads"])
        rope = dict(d.get("rope_parameters") or {})  # transformers 5
        theta = rope.get("rope_theta", d.get("rope_theta", 10000.0))
        scaling = d.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        attention_bias = bool(d.get("attention_bias", False))
        eos = d.get("eos_token_id")
        eos = () if eos is None else tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)
        return cls(
            vocab_size=int(d["vocab_size"]),
            hidden_size=int(d["hidden_size"]),
            intermediate_size=int(d["intermediate_size"]),
            num_layers=int(d["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(d.get("num_key_value_heads") or heads),
            head_dim=int(d.get("head_dim") or d["hidden_size"] // heads),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6 if model_type == "qwen2" else 1e-5)),
            rope_theta=float(theta),
            rope_scaling=_parse_scaling(scaling),
            max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            qkv_bias=True if model_type == "qwen2" else attention_bias,
            o_bias=False if model_type == "qwen2" else attention_bias,
            mlp_bias=bool(d.get("mlp_bias", False)),
            model_type=model_type,
            param_dtype=param_dtype,
            dtype=dtype,
            bos_token_id=d.get("bos_token_id"),
            eos_token_ids=eos,
        )

    @classmethod
    def from_gguf(cls, reader, param_dtype: str = "float32", dtype: str = "float32") -> "LlmConfig":
        """From a gguf.GGUFReader's metadata (architectures "llama" and "qwen2")."""
        meta = gguf_metadata(reader)
        arch = meta.get("general.architecture")
        if arch not in ("llama", "qwen2"):
            raise ValueError(f"GGUF general.architecture={arch!r}: supported are 'llama', 'qwen2'")

        def get(key: str, default: Any = None, required: bool = True):
            full = f"{arch}.{key}"
            if full not in meta and required and default is None:
                raise ValueError(f"GGUF metadata lacks {full!r}")
            return meta.get(full, default)

        names = {t.name: t for t in reader.tensors}
        tok = names.get("token_embd.weight")
        if tok is None:
            raise ValueError("GGUF file lacks tensor 'token_embd.weight'")
        hidden = int(get("embedding_length"))
        heads = int(get("attention.head_count"))
        vocab = int(get("vocab_size", int(tok.shape[-1])))
        scaling = None
        stype = get("rope.scaling.type", required=False)
        if stype == "linear":
            scaling = RopeScaling("linear", float(get("rope.scaling.factor")))
        elif stype not in (None, "none"):
            raise ValueError(f"GGUF {arch}.rope.scaling.type={stype!r} unsupported")
        eos = meta.get("tokenizer.ggml.eos_token_id")
        return cls(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=int(get("feed_forward_length")),
            num_layers=int(get("block_count")),
            num_heads=heads,
            num_kv_heads=int(get("attention.head_count_kv", heads)),
            head_dim=int(get("attention.key_length", hidden // heads)),
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon")),
            rope_theta=float(get("rope.freq_base", 10000.0)),
            rope_scaling=scaling,
            max_position_embeddings=int(get("context_length", 2048)),
            tie_word_embeddings="output.weight" not in names,
            qkv_bias="blk.0.attn_q.bias" in names,
            o_bias="blk.0.attn_output.bias" in names,
            mlp_bias=False,
            model_type=arch,
            param_dtype=param_dtype,
            dtype=dtype,
            bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
            eos_token_ids=() if eos is None else (int(eos),),
        )


def _parse_scaling(s: Mapping[str, Any] | None) -> RopeScaling | None:
    if not s:
        return None
    rtype = s.get("rope_type", s.get("type", "default"))
    if rtype == "default":
        return None
    if rtype == "llama3":
        try:
            return RopeScaling("llama3", float(s["factor"]), float(s["low_freq_factor"]),
                               float(s["high_freq_factor"]), int(s["original_max_position_embeddings"]))
        except KeyError as exc:
            raise ValueError(f"rope_scaling of type llama3 lacks field {exc.args[0]!r}") from None
    if rtype == "linear":
        return RopeScaling("linear", float(s["factor"]))
    raise ValueError(f"rope_scaling type {rtype!r} unsupported (default, linear, llama3)")


def gguf_metadata(reader) -> dict[str, Any]:
    """GGUF key/value fields as python scalars/strings (arrays of strings are skipped: the vocabulary)."""
    out: dict[str, Any] = {}
    for name, field in reader.fields.items():
        if name.startswith("tokenizer.ggml.") and name.endswith(("tokens", "merges", "token_type", "scores")):
            continue
        try:
            out[name] = field.contents()
        except Exception:  # noqa: BLE001 - unknown field layouts are just not needed.
            continue
    return out


def rope_inv_freq(cfg: LlmConfig) -> np.ndarray:
    """Inverse frequencies [head_dim/2] in float32, computed the way transformers does (incl. llama3 scaling)."""
    dim = cfg.head_dim
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    inv = (np.float32(1.0) / (np.float32(cfg.rope_theta) ** exponent)).astype(np.float32)
    s = cfg.rope_scaling
    if s is None:
        return inv
    if s.rope_type == "linear":
        return (inv / np.float32(s.factor)).astype(np.float32)
    # llama3: long wavelengths scaled down by `factor`, short kept, a smooth ramp in between.
    old = s.original_max_position_embeddings
    low_wavelen = old / s.low_freq_factor
    high_wavelen = old / s.high_freq_factor
    wavelen = (2 * math.pi / inv).astype(np.float32)
    scaled = np.where(wavelen > low_wavelen, inv / s.factor, inv).astype(np.float32)
    smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)
