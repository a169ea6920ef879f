"""Shared generation-stage fields (paper-spec 3.2, 3.3): base LLM, LoRA, instruction tuning, scoring, mesh.

Each data set's config calls `add_generation(config, sample_size=...)` and then overrides what differs.
"""
import ml_collections


def add_generation(config: ml_collections.ConfigDict, sample_size: int = 8192) -> ml_collections.ConfigDict:
    # The evaluation sample: every table row (the LLM rows, DeepFM, the baselines) is scored on the same
    # `eval_size` test rows (set per data set; 0 = all), saved with their ids in <workdir>/evaluate/sample.json.
    # "stratified": seeded, at most `eval_user_cap` rows per user, one row per user first, then uniform over
    # the capped pool (data/sampling.py); "first": the official first eval_size rows of the time-sorted split,
    # which hold a handful of users (the first 100 ML-1M test rows are 2 users).
    config.eval_sample = "stratified"
    config.eval_user_cap = 10  # 2,000 ML-1M test rows: all 586 test users, 321 of them with both labels
    config.eval_seed = 0
    # Device mesh (data, fsdp, tensor); -1 = all remaining devices.
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})

    m = config.model = ml_collections.ConfigDict()
    m.path = ""  # .gguf file or HF folder; "" = SmolLM2-135M-Instruct GGUF (assets.smollm2_gguf)
    m.tokenizer = ""  # "" = from `path`
    m.param_dtype = "float32"
    m.dtype = "float32"  # compute dtype (bfloat16 pays on GPU/TPU, not on CPU)

    lo = config.lora = ml_collections.ConfigDict()
    lo.rank = 8
    lo.alpha = 16.0
    lo.dropout = 0.05
    lo.targets = ("q_proj", "v_proj")

    f = config.finetune = ml_collections.ConfigDict()
    f.run_name = ""  # workdir/finetune/<run_name>; "" = "simple"
    f.k_history = 30  # K most recent items for the `simple` order
    f.max_prompt_tokens = 2048  # official CUTOFF_LEN; oldest history items dropped beyond it (0 = no limit)
    f.sample_size = sample_size  # train rows drawn with random.seed(42) (spec 1.6)
    f.sample_seed = 42
    f.train_size = 0  # first N prompts of the (mixed) set; 0 = all (official: 1024, 2048 when mixed)
    f.learning_rate = 5e-4
    f.b1 = 0.9
    f.b2 = 0.999
    f.eps = 1e-8
    f.weight_decay = 0.0
    f.effective_batch = 256
    f.micro_batch = 4  # gradient accumulation = effective_batch / micro_batch, inside one jitted step
    f.epochs = 20
    f.max_steps = 0  # 0 = epochs * ceil(N / effective_batch)
    f.eval_every = 0  # steps between validations; 0 = once per epoch (official)
    # Early stopping validates on `eval_size` validation rows (official: the first 1,000 TEST rows; never test
    # here), drawn as the evaluation sample is (eval_sample, eval_user_cap, eval_seed; data/sampling.py).
    f.eval_size = 1000
    f.eval_sample = "stratified"
    f.eval_user_cap = 10
    f.eval_seed = 0
    f.eval_order = "simple"
    f.eval_batch = 8
    f.early_stopping_metric = "eval_loss"  # or "eval_auc"
    f.patience = 5
    f.checkpoint_every = 0  # extra checkpoints between evaluations; 0 = only at evaluations and the end
    f.seed = 42  # LoRA init, data order, dropout
    f.min_bucket = 16
    f.double_softmax = False  # for the validation AUC
    f.remat = "attention"  # per-block remat: none | attention (keep matmuls, recompute scores) | full (keep inputs)
    f.progress = True

    e = config.evaluate = ml_collections.ConfigDict()
    e.split = "test"
    e.order = "simple"
    e.k_history = 30
    e.max_prompt_tokens = 2048
    e.batch_size = 8
    e.double_softmax = False  # True reproduces the official tables' bounded predictions (spec 3.3)
    e.adapters = ""  # "" = zero-shot; "best" = workdir/finetune/<run_name>/best; or a folder
    e.min_bucket = 16
    return config
