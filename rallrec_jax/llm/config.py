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
    # Per-frequency divisors [head_dim/2] of the rotary frequencies, as a Llama-3.1 GGUF file stores them
    # (tensor `rope_freqs.weight`); when set they are used as they are, and `rope_scaling` (if any) only
    # describes them for config.json (they were verified equal to it in `from_gguf`).
    rope_freq_factors: tuple[float, ...] | None = None
    # Where the weights came from (a hub name, "org/model@revision", or a local path): recorded beside
    # exported and saved adapters so that loading them onto another base is an error (llm/adapters.py).
    name_or_path: str = ""

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
        if self.rope_freq_factors is not None and len(self.rope_freq_factors) != self.head_dim // 2:
            raise ValueError(f"rope_freq_factors holds {len(self.rope_freq_factors)} values; head_dim={self.head_dim} "
                             f"needs {self.head_dim // 2}")

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

    def to_hf(self) -> dict[str, Any]:
        """The config.json of the transformers model with this architecture (LlamaForCausalLM or
        Qwen2ForCausalLM): the inverse of `from_hf`. Rope settings go in both spellings, transformers 5's
        `rope_parameters` and 4.x's `rope_theta`/`rope_scaling` (each version reads its own). A GGUF's
        `rope_freqs` that match no llama3 scaling cannot be written, nor biases that transformers cannot place."""
        if self.rope_freq_factors is not None and self.rope_scaling is None:
            raise ValueError(f"{self.name_or_path or 'this model'}: its rope_freqs divisors match no llama3 "
                             "rope_scaling, so config.json cannot express them; export from the HF folder instead")
        if self.model_type == "qwen2":
            if not self.qkv_bias or self.o_bias or self.mlp_bias:
                raise ValueError("a qwen2 config.json implies q/k/v biases and no others; this model's "
                                 f"(qkv_bias={self.qkv_bias}, o_bias={self.o_bias}, mlp_bias={self.mlp_bias}) differ")
            extra: dict[str, Any] = {"architectures": ["Qwen2ForCausalLM"], "use_sliding_window": False}
        else:
            if self.qkv_bias != self.o_bias:
                raise ValueError(f"a llama config.json has one attention_bias for q/k/v/o; this model has "
                                 f"qkv_bias={self.qkv_bias}, o_bias={self.o_bias}")
            extra = {"architectures": ["LlamaForCausalLM"], "attention_bias": self.qkv_bias,
                     "mlp_bias": self.mlp_bias, "pretraining_tp": 1}
        scaling = None
        if self.rope_scaling is not None:
            r = self.rope_scaling
            scaling = {"rope_type": r.rope_type, "factor": r.factor}
            if r.rope_type == "llama3":
                scaling.update(low_freq_factor=r.low_freq_factor, high_freq_factor=r.high_freq_factor,
                               original_max_position_embeddings=r.original_max_position_embeddings)
        eos = list(self.eos_token_ids)
        return {
            **extra,
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "rope_theta": self.rope_theta,
            "rope_scaling": scaling,
            "rope_parameters": {"rope_type": "default", **(scaling or {}), "rope_theta": self.rope_theta},
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos[0] if len(eos) == 1 else (eos or None),
            "dtype": self.param_dtype,
            "torch_dtype": self.param_dtype,
        }

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
        head_dim = int(get("attention.key_length", hidden // heads))
        theta = float(get("rope.freq_base", 10000.0))
        factors = None
        if "rope_freqs.weight" in names:
            where = getattr(reader.data, "filename", None) or "the GGUF file"
            if scaling is not None:
                raise ValueError(f"{where}: both {arch}.rope.scaling.type={stype!r} and tensor 'rope_freqs.weight': "
                                 "two rope scalings at once are not supported")
            factors = _rope_freq_factors(names["rope_freqs.weight"], head_dim, where)
            # The pre-scaling context: the file's own, else Llama 3.1's 8192, kept below the model's context
            # (transformers' check); only its ratio to the ramp's ends is in the divisors.
            original = get("rope.scaling.original_context_length", required=False) or min(
                8192, max(1, int(get("context_length", 16384)) // 2))
            scaling = fit_llama3_scaling(theta, head_dim, factors, original)
        eos = meta.get("tokenizer.ggml.eos_token_id")
        return cls(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=int(get("feed_forward_length")),
            num_layers=int(get("block_count")),
            num_heads=heads,
            num_kv_heads=int(get("attention.head_count_kv", heads)),
            head_dim=head_dim,
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon")),
            rope_theta=theta,
            rope_scaling=scaling,
            rope_freq_factors=factors,
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


def _base_inv_freq(theta: float, dim: int) -> np.ndarray:
    """Unscaled inverse frequencies [dim/2] in float32, as transformers computes them."""
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    return (np.float32(1.0) / (np.float32(theta) ** exponent)).astype(np.float32)


def _llama3_inv_freq(inv: np.ndarray, s: RopeScaling) -> np.ndarray:
    """transformers' llama3 rule: long wavelengths scaled down by `factor`, short kept, a smooth ramp between."""
    old = s.original_max_position_embeddings
    low_wavelen = old / s.low_freq_factor
    high_wavelen = old / s.high_freq_factor
    wavelen = (2 * math.pi / inv).astype(inv.dtype)
    scaled = np.where(wavelen > low_wavelen, inv / s.factor, inv).astype(inv.dtype)
    smooth = (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(inv.dtype)


def rope_inv_freq(cfg: LlmConfig) -> np.ndarray:
    """Inverse frequencies [head_dim/2] in float32, computed the way transformers does (incl. llama3 scaling);
    a GGUF file's own `rope_freqs` divisors, when the config carries them, as llama.cpp applies them."""
    inv = _base_inv_freq(cfg.rope_theta, cfg.head_dim)
    if cfg.rope_freq_factors is not None:
        return (inv / np.asarray(cfg.rope_freq_factors, np.float32)).astype(np.float32)
    s = cfg.rope_scaling
    if s is None:
        return inv
    if s.rope_type == "linear":
        return (inv / np.float32(s.factor)).astype(np.float32)
    return _llama3_inv_freq(inv, s)


def llama3_freq_factors(theta: float, head_dim: int, s: RopeScaling) -> np.ndarray:
    """The divisors [head_dim/2] that llama.cpp's converter writes as `rope_freqs` for a llama3 scaling
    (base frequency / scaled frequency), in float64."""
    inv = _base_inv_freq(theta, head_dim).astype(np.float64)
    return inv / _llama3_inv_freq(inv, s)


def _rope_freq_factors(tensor, head_dim: int, where) -> tuple[float, ...]:
    values = np.asarray(tensor.data, np.float32).reshape(-1)
    if values.shape[0] != head_dim // 2:
        raise ValueError(f"{where}: tensor 'rope_freqs.weight' holds {values.shape[0]} values, head_dim={head_dim} "
                         f"needs {head_dim // 2}")
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError(f"{where}: tensor 'rope_freqs.weight' holds values that are not positive finite numbers")
    return tuple(float(v) for v in values)


def fit_llama3_scaling(theta: float, head_dim: int, factors, original: int | None = None) -> RopeScaling | None:
    """The llama3 `rope_scaling` whose divisors equal `factors` (a GGUF's `rope_freqs`), or None if none does.

    The file keeps only the divisors, config.json wants the rule's parameters: `factor` is the largest divisor;
    the ramp between `low_freq_factor` and `high_freq_factor` is linear in 1/wavelength, so two ramp points
    fix it (only their ratios to `original_max_position_embeddings`, `original`, matter; default 8192, Llama
    3.1's); with fewer, Llama 3.1's (1, 4) is tried. Accepted only if it reproduces every divisor (relative
    1e-5)."""
    f = np.asarray(factors, np.float64)
    factor = float(f.max())
    if factor <= 1.0 + 1e-6:
        return None
    old = int(original) if original else 8192
    wavelen = 2 * math.pi / _base_inv_freq(theta, head_dim).astype(np.float64)
    ramp = ~np.isclose(f, 1.0, rtol=1e-6) & ~np.isclose(f, factor, rtol=1e-6)
    candidates = []
    if ramp.sum() >= 2:
        s = (1 / f[ramp] - 1 / factor) / (1 - 1 / factor)  # where each ramp point sits, 0 (scaled) .. 1 (kept)
        slope, intercept = np.polyfit(1 / wavelen[ramp], s, 1)  # s = old / (high - low) / wavelen - low / (high - low)
        if slope > 0:
            width = old / slope
            low = -intercept * width
            candidates.append(RopeScaling("llama3", factor, float(f"{low:.6g}"), float(f"{low + width:.6g}"), old))
    candidates.append(RopeScaling("llama3", factor, 1.0, 4.0, old))
    for cand in candidates:
        if cand.low_freq_factor < cand.high_freq_factor and np.allclose(
                llama3_freq_factors(theta, head_dim, cand), f, rtol=1e-5, atol=0):
            return cand
    return None
