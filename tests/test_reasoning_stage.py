"""The reasoning stage end to end on real data (configs/test.py, Amazon magazines) with a tiny random decoder in
both roles: P_G -> hinted and plain traces -> scores -> merge; a killed run resumes to the same records."""
import json
import shutil

import jax
import numpy as np
import pytest

import configs.test
from rallrec_jax import assets, metrics, parallel
from rallrec_jax.data import prepare
from rallrec_jax.llm import tokenizer as tok_lib
from rallrec_jax.llm.config import LlmConfig
from rallrec_jax.llm.model import create_model
from rallrec_jax.data import sampling
from rallrec_jax.reasoning import hints, merge, stage
from rallrec_jax.reasoning.settings import ReasoningRun

WIDE = LlmConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                 head_dim=8, max_position_embeddings=1024, tie_word_embeddings=True)
TIMING = ("generate_seconds", "score_seconds")
pytestmark = pytest.mark.slow  # end to end on real data: prepare, tokenizer, evaluate, two modes, merge


def _config():
    config = configs.test.get_config()
    config.data.build_tfds = False
    config.reasoning.temperature = 1.0  # a random tiny model: make the K traces visibly differ
    return config


def _mesh():
    return parallel.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])


def _records(workdir, mode):
    recs = stage.read_records(stage._root(workdir) / mode / "traces.jsonl")
    return {row: {k: v for k, v in rec.items() if k not in TIMING} for row, rec in recs.items()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    config = _config()
    work = tmp_path_factory.mktemp("reason")
    data = prepare.prepare_data(config.data, work)
    tokenizer = tok_lib.load_tokenizer(assets.smollm2_gguf())
    model = create_model(WIDE, seed=5)
    summary = stage.reason(config, work, data=data, model=model, tokenizer=tokenizer, general_model=model,
                           general_tokenizer=tokenizer, mesh=_mesh())
    return config, work, data, tokenizer, model, summary


def test_every_row_gets_k_scored_traces_in_both_modes(setup):
    config, work, data, _, _, summary = setup
    n = config.reasoning.num_rows
    k = config.reasoning.num_traces
    general = np.load(stage._root(work) / "general.npy")
    assert general.shape == (n,)
    # The rows: the first n of the user-stratified evaluation sample, n distinct users here.
    rows = stage.reasoning_rows(ReasoningRun.from_config(config), data)
    assert rows == sampling.evaluation_sample(data, config).rows[:n].tolist()
    assert len(set(data.samples["test"]["user"][rows].tolist())) == n
    assert json.loads((stage._root(work) / "general.json").read_text())["row_ids"] == rows
    p_general = dict(zip(rows, general.tolist()))
    labels = data.samples["test"]["label"]
    for mode in ("plain", "hint"):
        assert summary[mode]["rows_done"] == n
        recs = _records(work, mode)
        assert sorted(recs) == sorted(rows)
        for row, rec in recs.items():
            assert rec["label"] == labels[row]
            assert len(rec["traces"]) == len(rec["lengths"]) == k
            assert all(0 <= x <= config.reasoning.max_new_tokens for x in rec["lengths"])
            for name in stage.SCORES:
                assert len(rec["scores"][name]) == k and all(0 <= p <= 1 for p in rec["scores"][name])
            assert rec["p_general"] == pytest.approx(p_general[row])  # the hint's (and merge's) P_G
    plain, hinted = _records(work, "plain"), _records(work, "hint")
    # The hint was built from P_G: the hinted prompt is longer by exactly the hint's tokens (at most a few).
    for r in plain:
        extra = len(tok_lib.encode(setup[3], [hints.knowledge_hint(p_general[r], double_softmax=False)])[0])
        assert hinted[r]["prompt_tokens"] - plain[r]["prompt_tokens"] in range(extra - 2, extra + 3)


def test_resume_after_interruption_equals_the_uninterrupted_run(setup, tmp_path):
    config, work, data, tokenizer, model, _ = setup
    config.reasoning.modes = ("hint",)
    shutil.copytree(work / "data", tmp_path / "data")
    (tmp_path / "reasoning").mkdir()
    for name in ("general.json", "general.npy"):  # the same P_G; evaluate need not run again
        shutil.copy(stage._root(work) / name, tmp_path / "reasoning" / name)
    kw = dict(data=data, model=model, tokenizer=tokenizer, general_model=model, general_tokenizer=tokenizer,
              mesh=_mesh())
    first = stage.reason(config, tmp_path, stop_after_batches=1, **kw)
    assert first["hint"]["rows_done"] == config.reasoning.prompts_per_batch
    path = stage._root(tmp_path) / "hint" / "traces.jsonl"
    with open(path, "a") as f:
        f.write('{"row": 2, "label": 1, "tra')  # a torn line, as a kill in mid-write leaves
    torn = path.read_text()
    first_rows = stage.reasoning_rows(ReasoningRun.from_config(config), data)[:config.reasoning.prompts_per_batch]
    # a reader changes nothing
    assert sorted(stage.read_records(path)) == sorted(first_rows) and path.read_text() == torn
    second = stage.reason(config, tmp_path, **kw)
    assert second["hint"]["rows_done"] == config.reasoning.num_rows
    assert _records(tmp_path, "hint") == _records(work, "hint")
    assert path.read_text().endswith("}\n")


def test_changed_settings_are_refused(setup, tmp_path):
    config, work, data, tokenizer, model, _ = setup
    shutil.copytree(stage._root(work), tmp_path / "reasoning")
    config = _config()
    config.reasoning.modes = ("plain",)
    config.reasoning.num_traces = 2
    with pytest.raises(ValueError, match="other settings"):
        stage.reason(config, tmp_path, data=data, model=model, tokenizer=tokenizer, general_model=model,
                     general_tokenizer=tokenizer, mesh=_mesh())


def test_merge_results_rows_match_the_equations(setup):
    config, work, _, _, _, _ = setup
    config = _config()
    result = stage.merge_results(config, work)
    names = [row["model"] for row in result["rows"]]
    assert names == ["general (M_G)", "reasoning w/o hint", "merged plain traces (w/o KP, w/ CM)",
                     "reasoning w/ hint", "merged (RALLRec+)"]
    general = np.load(stage._root(work) / "general.npy")
    gmeta = json.loads((stage._root(work) / "general.json").read_text())
    labels = np.asarray(gmeta["labels"])
    preds = np.array([stage.read_records(stage._root(work) / "hint" / "traces.jsonl")[r]["scores"]["softmax"]
                      for r in gmeta["row_ids"]])  # [N, K]
    mean_r, var_r = preds.mean(1), preds.var(1)
    fused = (0.1 * mean_r / (var_r + 1e-3) + general / 1e-3) / (0.1 / (var_r + 1e-3) + 1 / 1e-3)  # eq. 10, var_G=0
    rows = {row["model"]: row for row in result["rows"]}
    for name, p in (("general (M_G)", general), ("reasoning w/ hint", mean_r), ("merged (RALLRec+)", fused)):
        want = metrics.ctr_metrics(labels, p)
        for key in ("auc", "logloss", "acc"):
            assert rows[name][key] == pytest.approx(want[key], abs=1e-5)
    assert rows["reasoning w/ hint"]["K"] == config.reasoning.num_traces
    saved = np.load(stage._root(work) / "probabilities.npz")  # per test row, for the report's intervals
    np.testing.assert_array_equal(saved["row_ids"], gmeta["row_ids"])
    np.testing.assert_allclose(saved["model/merged (RALLRec+)"], fused, atol=1e-6)
    assert all(rows[n]["seconds"] > 0 for n in rows)
    np.testing.assert_allclose(np.asarray(merge.merge(mean_r, var_r, general, np.zeros_like(general))), fused,
                               atol=1e-6)
    for path in result["figures"].values():
        assert path.endswith(".png") and (stage._root(work) / "figures").is_dir()
    assert {"hint_length", "hint_variance", "hint_alpha", "hint_epsilon", "latency"} <= set(result["figures"])
    alpha_rows = result["sweeps"]["hint_alpha"]["rows"]
    assert [r["alpha"] for r in alpha_rows] == list(config.reasoning.alphas)
    assert (stage._root(work) / "results.md").read_text().count("\n") == 2 + len(result["rows"])
    # The first rows only, as for a run still in progress.
    m = int(max(np.argmax(labels == 0), np.argmax(labels == 1))) + 1  # fewest first rows with both classes
    assert m < len(labels)
    config.reasoning.merge_rows = m
    part = stage.merge_results(config, work)
    assert part["n"] == m
    assert part["rows"][0]["auc"] == pytest.approx(metrics.ctr_metrics(labels[:m], general[:m])["auc"])


def test_cache_settings_keep_their_keys_and_values():
    """general.json and meta.json are reused only while these dicts hash the same: their keys and values, written
    out by hand from configs/test.py over configs/base_generation.py and base_reasoning.py, must not drift (old
    workdirs would be recomputed, or refused)."""
    from rallrec_jax import artifacts

    config = configs.test.get_config()
    run = ReasoningRun.from_config(config)
    sample = {"split": "test", "how": "stratified", "seed": 0, "user_cap": 10}
    assert stage.general_settings(run, 8, sample) == {
        "rows": 8, "sample": sample, "split": "test", "order": "simple", "k_history": 5, "max_prompt_tokens": 512,
        "double_softmax": False, "adapters": "", "model": "", "model_files": artifacts.model_identity(""),
        "data": config.data.to_dict()}
    common = {"sample": sample, "split": "test", "order": "simple", "k_history": 5, "max_prompt_tokens": 512,
              "llm": "", "llm_files": artifacts.model_identity(""), "num_traces": 3, "temperature": 0.6,
              "top_p": 0.95, "top_k": 0, "max_new_tokens": 8, "seed": 42, "prompts_per_batch": 2,
              "official_prompt": False, "data": config.data.to_dict()}
    assert stage.trace_settings(run, "plain", "p_g key", sample) == {
        **common, "mode": "plain", "hint_bands": None, "general": None}
    assert stage.trace_settings(run, "hint", "p_g key", sample) == {
        **common, "mode": "hint", "hint_bands": "softmax", "general": "p_g key"}
