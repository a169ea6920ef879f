"""The shared LLM layer: a Flax NNX Llama/Qwen2 decoder and what runs it.

config (LlmConfig from config.json or GGUF metadata) -> model (NNX decoder: one stacked Block scanned over
the layers, logical sharding axes) -> attention (einsum path for CPU, dot_product_attention for GPU) ->
sharding (logical axes -> NamedSharding, whole models onto a mesh) -> weights (HF safetensors / GGUF ->
stacked params, one regex table) -> lora (stacked adapters as nnx.LoRAParam) -> tokenizer (AutoTokenizer or a GGUF's own
without torch, chat template, Yes/No ids) -> sampler (prefill + one while_loop decode, prompt prefix shared by the K samples) and scoring
(P(Yes) at the last real token, prefix-shared continuations, mean-pooled hidden states). Out and in: adapters
(what an adapter file records about its base and layout, and the checks), peft (PEFT LoRA folders), export
(a merged transformers folder).
"""
