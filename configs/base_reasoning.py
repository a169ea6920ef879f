"""Shared reasoning-stage fields (paper-spec 3.4-3.6): the reasoning LLM M_R, K traces, trace scoring, merging.

Each data set's config attaches `config.reasoning = base_reasoning.reasoning_config()`. The evaluated rows,
split, history order and K history items are the generation stage's (`config.evaluate`, `config.eval_size`),
so P_G and the reasoning traces describe the same prompts.
"""
import ml_collections


def reasoning_config(**overrides) -> ml_collections.ConfigDict:
    """The defaults, then `overrides` (field=value; an unknown field is an error)."""
    r = ml_collections.ConfigDict()
    r.llm_path = ""  # M_R: .gguf or HF folder (e.g. DeepSeek-R1-Distill-Llama-8B); "" = SmolLM2-135M-Instruct GGUF
    r.tokenizer = ""  # "" = from llm_path
    r.param_dtype = "float32"
    r.dtype = "float32"
    r.modes = ("plain", "hint")  # plain prompt (Tables 2/3) and knowledge-injected prompt (KP, eq. 9)
    # The first N rows of the evaluation sample (config.eval_size rows, user-stratified by default; every prefix
    # of it is itself a user-stratified sample, data/sampling.py); 0 = the whole sample.
    r.num_rows = 0
    r.num_traces = 5  # K traces per sample (spec 3.4: the consistency analysis uses five runs)
    r.temperature = 0.6  # DeepSeek-R1 guidance
    r.top_p = 0.95
    r.top_k = 0
    r.max_new_tokens = 4000  # official vLLM budget (4000 plain / 4800 KP); set small on CPU
    r.seed = 42
    r.prompts_per_batch = 4  # rows sampled together (part of the seeding: keep it fixed across a resume)
    r.score_batch = 8
    r.max_prompt_tokens = 2048  # oldest history items dropped beyond it (0 = no limit)
    # The KP hint's bands were set for the official double-softmax P_G: "follow" reads a plain-softmax P_G
    # (evaluate.double_softmax=False) on that scale first, so the hedges keep their meaning; "official" applies
    # the margins to P_G as it is (with a plain softmax almost every hint then reads "is"). reasoning/hints.py.
    r.hint_bands = "follow"
    r.official_prompt = False  # True: the released string ("<think>" in the user turn, no generation prompt)
    r.score = "softmax"  # trace P(Yes): "softmax" (Yes/No logits), "double_softmax" (official), "text" (parser)
    # Consistency-based merging (eq. 10).
    r.alpha = 0.1
    r.epsilon = 1e-3
    r.general_mean = "first"
    r.merge_rows = 0  # merge the first N rows only (0 = all evaluated rows)
    r.alphas = (0.1, 0.2, 0.3, 0.4, 0.5)
    r.epsilons = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
    # Analyses.
    r.length_groups = 5  # Fig. 2
    r.variance_window = 1000  # Fig. 3 (500 for BookCrossing)
    for key, value in overrides.items():
        if key not in r:
            raise ValueError(f"reasoning_config: unknown field {key!r}")
        r[key] = value
    return r
