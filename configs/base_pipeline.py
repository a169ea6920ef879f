"""Pipeline-level settings: which table rows to produce, and the ID baseline."""
import ml_collections


def add_pipeline(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    p = config.pipeline = ml_collections.ConfigDict()
    p.train_kind = "text"  # retrieval embedding of the tuning prompts (the released LoRA: text); "" = recent only
    p.embedding_ablation = True  # Table 6 rows (text / ID / concat w/o SSL / concat w/ SSL, no reranking)
    # Fig. 8 rows (tuned model; Recent / Retri.-then-Mix / Mix-then-Retri. / ReRank at inference): at most two
    # evaluations more, the others are Table 4 / 6 rows already scored. On in the data-set configs.
    p.retrieval_ablation = False
    # Only the table rows of these names (e.g. ("Zero-shot LLM", "Tuned LLM (recent history)") to judge a tuning
    # recipe); () = every row the config asks for. The ID rows (DeepFM, baselines) are always in.
    p.rows = ()
    # The retrieval rows (ReLLa, Hybrid-Score, RALLRec, Table 6, Fig. 8) on the first N rows of the evaluation
    # sample (a user-stratified sample too; 0 = all of it): the zero-shot and recent-history rows keep the whole
    # sample. The report gives each row its own rows, users and intervals; paired comparisons use the common prefix.
    p.retrieval_eval_size = 0
    # Table 4's "Baseline" rows (generation/baselines.py): the item mean is smoothed towards the global mean with
    # `item_prior` pseudo-ratings; each baseline's logistic regression has a ridge of l2 * N.
    # `deepfm_recent`: a second DeepFM row whose fields add the mean of the K ratings the prompt shows (a user's ID
    # embedding is frozen when training ends; on ML-1M the ID-only DeepFM loses to the two rating means without it).
    config.baselines = ml_collections.ConfigDict(dict(item_prior=10.0, l2=1e-6, deepfm_recent=True))
    # 95% intervals of every metric: a user-level bootstrap (`resamples` resamples of the sample's users, seeded),
    # and the paired bootstrap of the AUC differences the paper's claims rest on (metrics.py).
    config.bootstrap = ml_collections.ConfigDict(dict(resamples=1000, seed=0, level=0.95))
    config.deepfm = ml_collections.ConfigDict(dict(embed_dim=16, hidden=(200, 200, 200), dropout=0.5,
                                                   learning_rate=1e-3, batch_size=1024, max_epochs=20, patience=2,
                                                   seed=0))
    return config
