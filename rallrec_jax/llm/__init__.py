"""The shared LLM layer: a Flax NNX Llama/Qwen2 decoder and what runs it.

config (LlmConfig from config.json or GGUF metadata) -> model (NNX decoder, logical sharding axes) ->
weights (HF safetensors / GGUF -> params, one regex table) -> lora (adapters as nnx.LoRAParam) ->
tokenizer (AutoTokenizer or a GGUF's own, chat template, Yes/No ids) -> sampler (prefill + one while_loop decode) and
scoring (P(Yes) at the last real token, mean-pooled hidden states).
"""
