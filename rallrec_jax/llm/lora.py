"""LoRA adapters as NNX modules (the paper's tuning: r=8, alpha=16, dropout=0.05 on q_proj and v_proj).

`apply_lora` wraps every `Dense` whose attribute name matches a target pattern in a `LoraDense`:
y = base(x) + (alpha / r) * dropout(x) @ A @ B, with A random (PEFT's kaiming-uniform bound 1/sqrt(in))
and B zero, so a fresh adapter leaves the model unchanged. A and B are `nnx.LoRAParam`; as LoRAParam
subclasses Param, train with `wrt=nnx.LoRAParam` (a `wrt=nnx.Param` optimizer would also move the base).
Dropout follows the module's train/eval mode (`model.train()`, `model.eval()`); `apply_lora` leaves the
model in eval mode. `merge_lora` folds the adapters into the base kernels for inference.

Stacked decoder blocks (`llm/model.py`): a target inside `model.layers` has a kernel [N, in, out], so its
adapters are stacked the same way, lora_a [N, in, r] and lora_b [N, r, out] (logical axis "layers"), and
its dropout holds N RNG streams, one per layer: the layer scan runs each layer's slice with its own
stream, exactly as a Python loop over the slices would.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from rallrec_jax.llm.model import Dense


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q_proj", "v_proj")  # regexes, full match on the attribute name

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"LoRA rank={self.rank} must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout={self.dropout} must be in [0, 1)")
        if not self.targets:
            raise ValueError("LoRA targets is empty")


class PackedDropout(nnx.Dropout):
    """`nnx.Dropout` whose mask is drawn two entries per 32-bit random word (16-bit thresholds), not one.

    Why: on CPU the threefry draws behind `jax.random.bernoulli` cost more than the LoRA matmuls they mask
    (measured: a [6144, 576] mask took 60 ms, the 576 x 576 base matmul on the same rows 30 ms), and with every
    linear module adapted they were most of a training step. Half the words halve that. The drop rate is held
    to 1/65536 (0.05 -> 0.050003), the inputs kept are scaled by 1 / keep as usual."""

    def __call__(self, inputs, *, deterministic: bool | None = None, rngs=None) -> jax.Array:
        deterministic = self.deterministic if deterministic is None else deterministic
        if self.rate == 0.0 or deterministic:
            return inputs
        stream = self.rngs if rngs is None else rngs
        key = stream() if callable(stream) else stream
        threshold = min(round(self.rate * 65536), 65536)
        if threshold >= 65536:
            return jnp.zeros_like(inputs)
        n = inputs.size
        words = jax.random.bits(key, (-(-n // 2),), jnp.uint32)
        halves = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)[:n].reshape(inputs.shape)
        keep = 1.0 - threshold / 65536
        return jnp.where(halves >= threshold, inputs / jnp.asarray(keep, inputs.dtype), jnp.zeros_like(inputs))


class LoraDense(nnx.Module):
    def __init__(self, base: Dense, cfg: LoraConfig, *, rngs: nnx.Rngs):
        self.base = base
        self.rank, self.alpha = cfg.rank, float(cfg.alpha)  # kept (static) so a saved adapter can name them
        self.scale = cfg.alpha / cfg.rank
        kernel = base.kernel.get_value()
        lead = tuple(kernel.shape[:-2])  # (N_layers,) for a stacked block's Dense, () otherwise
        axes = base.kernel.get_metadata().get("logical_axes") or (None,) * kernel.ndim
        lead_axes, (in_axis, out_axis) = tuple(axes[:-2]), tuple(axes[-2:])
        dtype = kernel.dtype
        bound = 1.0 / (base.in_features ** 0.5)
        self.lora_a = nnx.LoRAParam(
            jax.random.uniform(rngs.params(), lead + (base.in_features, cfg.rank), dtype, -bound, bound),
            logical_axes=lead_axes + (in_axis, "lora_rank"))
        self.lora_b = nnx.LoRAParam(jnp.zeros(lead + (cfg.rank, base.out_features), dtype),
                                    logical_axes=lead_axes + ("lora_rank", out_axis))
        if lead:  # one stream per layer slice: key [N] from one draw of the dropout stream, counts [N]
            self.dropout = PackedDropout(cfg.dropout, deterministic=True)
            keys = jax.random.split(rngs["dropout"](), math.prod(lead)).reshape(lead)
            self.dropout.rngs = nnx.RngStream(keys, tag="dropout")
        else:
            self.dropout = PackedDropout(cfg.dropout, deterministic=True, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.base.dtype
        h = self.dropout(x).astype(dtype) @ self.lora_a[...].astype(dtype)  # [..., r]
        return self.base(x) + self.scale * (h @ self.lora_b[...].astype(dtype))

    def inference_kernel(self) -> tuple[jax.Array, jax.Array | None] | None:
        """(W + scale * A @ B [..., in, out], the base's bias) as `Dense.inference_kernel` gives them: the same
        map at inference; None in training mode with dropout, where x and the adapter see different inputs."""
        if self.dropout.rate > 0 and not self.dropout.deterministic:
            return None
        base = self.base.inference_kernel()
        if base is None:
            return None
        kernel, bias = base
        a, b = self.lora_a[...].astype(jnp.float32), self.lora_b[...].astype(jnp.float32)
        return (kernel.astype(jnp.float32) + self.scale * (a @ b)).astype(kernel.dtype), bias

    def merged(self) -> Dense:
        """A plain Dense with kernel W + scale * A @ B (same variables otherwise)."""
        kernel = self.base.kernel
        a, b = self.lora_a[...].astype(jnp.float32), self.lora_b[...].astype(jnp.float32)
        new = kernel.get_value().astype(jnp.float32) + self.scale * (a @ b)  # [N,] in, out
        self.base.kernel = nnx.Param(new.astype(kernel.get_value().dtype), **kernel.get_metadata())
        return self.base


def _find(model: nnx.Module, kind: type) -> list[tuple[tuple, nnx.Module]]:
    return [(path, node) for path, node in nnx.iter_graph(model) if isinstance(node, kind) and path]


def _set(model: nnx.Module, path: tuple, value: nnx.Module) -> None:
    parent = model
    for key in path[:-1]:
        parent = parent[key] if isinstance(key, int) else getattr(parent, key)
    if isinstance(path[-1], int):
        parent[path[-1]] = value
    else:
        setattr(parent, path[-1], value)


def apply_lora(model: nnx.Module, cfg: LoraConfig = LoraConfig(), *, rngs: nnx.Rngs | None = None) -> nnx.Module:
    """Wraps the target Dense layers in place; returns the model (eval mode). Errors if nothing matches."""
    rngs = nnx.Rngs(0) if rngs is None else rngs
    patterns = [re.compile(t) for t in cfg.targets]
    hits = [(path, node) for path, node in _find(model, Dense)
            if isinstance(path[-1], str) and any(p.fullmatch(path[-1]) for p in patterns)
            and not (len(path) > 1 and path[-2] == "base")]
    if not hits:
        raise ValueError(f"LoRA targets {cfg.targets} match no Dense layer of the model")
    for path, node in hits:
        _set(model, path, LoraDense(node, cfg, rngs=rngs))
    model.eval()
    return model


def merge_lora(model: nnx.Module) -> nnx.Module:
    """Folds every adapter into its base kernel in place (for inference); returns the model."""
    for path, node in _find(model, LoraDense):
        _set(model, path, node.merged())
    return model


def lora_paths(model: nnx.Module) -> Sequence[str]:
    return [".".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.LoRAParam))]


def lora_modules(model: nnx.Module) -> dict[str, LoraDense]:
    """Dotted path of every adapter-wrapped Dense ("layers.attn.q_proj", "lm_head") -> its LoraDense."""
    return {".".join(map(str, path)): node for path, node in _find(model, LoraDense)}


def lora_config_of(model: nnx.Module) -> LoraConfig | None:
    """The LoraConfig that `apply_lora` would need to rebuild this model's adapters (targets: the wrapped
    layers' attribute names), or None without adapters; an error if its adapters differ in rank, alpha or
    dropout (one LoraConfig cannot describe them)."""
    found = lora_modules(model)
    if not found:
        return None
    shapes = {(m.rank, m.alpha, float(m.dropout.rate)) for m in found.values()}
    if len(shapes) != 1:
        raise ValueError(f"the model's adapters differ in (rank, alpha, dropout): {sorted(shapes)}")
    rank, alpha, dropout = shapes.pop()
    names = sorted({path.rsplit(".", 1)[-1] for path in found})
    return LoraConfig(rank=rank, alpha=alpha, dropout=dropout, targets=tuple(names))
