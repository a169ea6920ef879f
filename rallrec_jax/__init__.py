"""rallrec-jax: RALLRec+ (retrieval-augmented LLM recommendation with reasoning) in JAX/Flax.

Stages live in subpackages that import only downwards: data -> retrieval -> generation -> reasoning,
all on the shared layers (llm, parallel, checkpoint, metrics, assets). See docs in README.md.
"""

__version__ = "0.1.0"
