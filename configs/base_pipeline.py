"""Pipeline-level settings: which table rows to produce, and the ID baseline."""
import ml_collections


def add_pipeline(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    p = config.pipeline = ml_collections.ConfigDict()
    p.train_kind = "text"  # retrieval embedding of the tuning prompts (the released LoRA: text); "" = recent only
    p.embedding_ablation = True  # Table 6 rows (text / ID / concat w/o SSL / concat w/ SSL, no reranking)
    # Fig. 8 rows (tuned model; Recent / Retri.-then-Mix / Mix-then-Retri. / ReRank at inference): at most two
    # evaluations more, the others are Table 4 / 6 rows already scored. On in the data-set configs.
    p.retrieval_ablation = False
    config.deepfm = ml_collections.ConfigDict(dict(embed_dim=16, hidden=(200, 200, 200), dropout=0.5,
                                                   learning_rate=1e-3, batch_size=1024, max_epochs=20, patience=2,
                                                   seed=0))
    return config
