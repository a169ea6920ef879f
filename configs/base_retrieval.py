"""Retrieval-stage settings (paper symbols where one exists: k_history, gamma, beta)."""
import ml_collections


def retrieval_config() -> ml_collections.ConfigDict:
    r = ml_collections.ConfigDict()
    r.llm_path = ""  # HF folder or .gguf for descriptions and text embeddings; "" = SmolLM2-135M-Instruct wheel
    r.embed_batch_size = 8
    r.use_descriptions = True
    r.description_max_new_tokens = 128  # the official run allowed 1024 (descriptions are asked under 80 words)
    r.description_temperature = 0.8
    r.description_top_p = 0.9
    r.description_batch_size = 16
    r.description_seed = 0
    r.text_mode = "paper"  # "paper": [e_title || e_desc]; "official": e_desc alone
    r.graph = "train"  # "train": training interactions only; "official": the released graph (reaches test time)
    r.lightgcn = ml_collections.ConfigDict(dict(dim=64, num_layers=3, lr=1e-3, l2=1e-4, batch_size=2048, epochs=50,
                                                seed=0, propagation="auto", eval_every=0, checkpoint_every=5))
    r.ssl = ml_collections.ConfigDict(dict(hidden=512, temperature=1.0, negatives="all", batch_size=0, lr=1e-3,
                                           weight_decay=1e-4, epochs=300, seed=0))
    r.kind = "mix3"  # text | colla | mix | mix3 (Table 6) | hybrid (score mix) | retri_then_mix (Fig. 8)
    r.style = "paper"  # "paper": per-row L2 blocks; "official": PCA text, max-norm blocks, cosine
    r.pca_dim = 128  # the official style's PCA of the text block
    # Paper style: the text block centred over the items before its L2 norm (mean-pooled LLM states share one
    # large direction, so uncentred cosines bunch together), and optionally PCA to `text_pca` components (0 = off).
    r.text_center = True
    r.text_pca = 0
    r.k_history = 30
    r.order = "rerank"  # simple | high | sequential | rerank | official_rerank
    r.gamma = 2.0 / 3.0
    r.beta = 1.0
    return r
