"""Paper-scale settings: Llama-3.1-8B-Instruct as M_G (and for descriptions / text embeddings),
DeepSeek-R1-Distill-Llama-8B as M_R, bfloat16, and a mesh per machine. Chosen with a config variant:

  --config configs/movielens.py:paper-gpu1   one GPU (80 GB class)
  --config configs/movielens.py:paper-gpu8   8 GPUs of one host: parameters sharded 8 ways (fsdp)
  --config configs/movielens.py:paper-tpu    a TPU slice: fsdp within 4 chips, data parallel across groups
Multi-host slices start one process per host; jax.distributed.initialize joins them (parallel.py).
Models are hub names (fetched once into the cache) or local folders: override --config.model.path etc.
"""
import ml_collections

# `platform`: parallel.make_mesh stops with the fix (install the cuda12 / tpu extra) when jax sees only a CPU.
MESHES = {
    "paper-gpu1": {"data": 1, "fsdp": 1, "tensor": 1, "platform": "gpu"},
    "paper-gpu8": {"data": 1, "fsdp": 8, "tensor": 1, "platform": "gpu"},
    "paper-tpu": {"data": -1, "fsdp": 4, "tensor": 1, "platform": "tpu"},
}
GENERAL = "meta-llama/Llama-3.1-8B-Instruct"
REASONING = "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"


def apply_variant(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
    if not variant:
        return config
    if variant not in MESHES:
        raise ValueError(f"unknown config variant {variant!r}; known: {sorted(MESHES)}")
    config.mesh = ml_collections.ConfigDict(MESHES[variant])
    config.model.path = config.retrieval.llm_path = GENERAL
    config.reasoning.llm_path = REASONING
    for section in (config.model, config.reasoning):
        section.param_dtype = section.dtype = "bfloat16"
    config.retrieval.description_max_new_tokens = 1024  # the official budget (descriptions under 80 words)
    config.reasoning.max_new_tokens = 4800  # the official knowledge-injected budget
    config.retrieval.embed_batch_size = config.evaluate.batch_size = 32
    return config
