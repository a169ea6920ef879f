"""Model FLOPs of a LoRA train step, for model-FLOP utilisation (MFU) in `benchmarks/gpu_lora_mfu.py`.

Counted as the work the step must do, not what the compiler runs: rematerialised recomputation is not
counted (the MFU convention), and neither are element-wise ops, norms and softmax. Per token of a
sequence of length S:

- decoder matmuls, N_mm = layers * (D*H*hd [q] + 2*D*KV*hd [k, v] + H*hd*D [o] + 3*D*F [gate, up, down]):
  forward 2*N_mm, backward 2*N_mm for the activation gradients and none for the frozen weights' gradients
  (LoRA trains only its adapters) -> 4*N_mm;
- causal attention, per layer: forward QK^T and PV over on average (S+1)/2 keys, 2 * 2 * H*hd * (S+1)/2;
  the backward needs twice that (gradients of q, k and v) -> 3x the forward;
- LoRA adapters (rank r on modules of width in -> out): 2*r*(in+out) forward, twice that backward
  (activation and adapter gradients) -> 6*r*(in+out) each;
- the vocab head only at the A answer positions of a row: 2*D*V forward and 2*D*V backward to the hidden
  state per answer token (the head is frozen: no weight gradient) -> 4*D*V.
"""
from __future__ import annotations

from rallrec_jax.llm.config import LlmConfig


def decoder_matmul_params(cfg: LlmConfig) -> int:
    """N_mm: the decoder's matmul weights (no embedding, head, norms or biases)."""
    d, f, h, kv, hd = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    return cfg.num_layers * (d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * f)


def lora_step_flops(cfg: LlmConfig, batch: int, seq_len: int, answer_len: int = 1, lora_rank: int = 8,
                    lora_modules: tuple[str, ...] = ("q_proj", "v_proj")) -> float:
    """Model FLOPs of one LoRA train step on `batch` rows of `seq_len` tokens (see the module docstring)."""
    d, h, kv, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    widths = {"q_proj": (d, h * hd), "k_proj": (d, kv * hd), "v_proj": (d, kv * hd), "o_proj": (h * hd, d),
              "gate_proj": (d, cfg.intermediate_size), "up_proj": (d, cfg.intermediate_size),
              "down_proj": (cfg.intermediate_size, d)}
    unknown = sorted(set(lora_modules) - set(widths))
    if unknown:
        raise ValueError(f"unknown LoRA target modules {unknown}; known: {sorted(widths)}")
    tokens = batch * seq_len
    matmul = 4.0 * decoder_matmul_params(cfg) * tokens
    attention = 3.0 * cfg.num_layers * 2 * 2 * h * hd * (seq_len + 1) / 2 * tokens
    lora = 6.0 * lora_rank * sum(sum(widths[m]) for m in lora_modules) * cfg.num_layers * tokens
    head = 4.0 * d * cfg.vocab_size * batch * answer_len
    return matmul + attention + lora + head
