"""Reasoning prompts with the hint, K traces with one shared prefill, and trace scoring (paper-spec 3.4).

Tiny random decoders with the real SmolLM2 vocabulary and tokenizer (chat template from its GGUF)."""
import numpy as np
import pytest

from rallrec_jax import assets
from rallrec_jax.llm import tokenizer as tok_lib
from rallrec_jax.llm.config import LlmConfig
from rallrec_jax.llm.model import create_model
from rallrec_jax.reasoning import hints, traces
from rallrec_jax.prompts import reasoning as reasoning_prompts

WIDE = LlmConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                 head_dim=8, max_position_embeddings=512, tie_word_embeddings=True)
PROMPT = ("The user is a female. Her job is artist. Her age is 25.\nShe watched the following movies in order in the "
          "past, and rated them:\n['Toy Story (1995) (5 stars)']\nBased on the movies she has watched, deduce if she "
          "will like the movie ***Heat (1995)***.\nYou should ONLY tell me yes or no.")


@pytest.fixture(scope="module")
def tokenizer():
    return tok_lib.load_tokenizer(assets.smollm2_gguf())


@pytest.fixture(scope="module")
def model():
    return create_model(WIDE, seed=3)


# ----------------------------------------------------------------------------- prompts
def test_hinted_prompt_holds_the_hint_in_the_user_turn_and_opens_the_think_block(tokenizer):
    hint = hints.knowledge_hint(0.83)
    assert hint == "\nAnother one think the answer is Yes.\n"
    text = reasoning_prompts.reasoning_prompt(tokenizer, PROMPT, hint)
    want = ("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n" + PROMPT + hint
            + "<|im_end|>\n<|im_start|>assistant\n<think>\n")
    assert text == want
    assert text.count("Another one think") == 1


def test_plain_prompt_has_no_hint(tokenizer):
    text = reasoning_prompts.reasoning_prompt(tokenizer, PROMPT, "")
    assert "Another one" not in text
    assert text == reasoning_prompts.assistant_opening(tokenizer, PROMPT)
    assert text.endswith("<|im_start|>assistant\n<think>\n")


def test_official_prompt_reproduces_the_released_string(tokenizer):
    """inf_KP.py: system "", user = input + HINT + "\\n<think>", no generation prompt (spec 6.4 bug 10)."""
    hint = hints.knowledge_hint(0.45)
    text = reasoning_prompts.reasoning_prompt(tokenizer, PROMPT, hint, official=True)
    assert hint == "\nAnother one think the answer might be No.\n"
    assert text == ("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n" + PROMPT + hint + "\n<think><|im_end|>\n")
    assert "assistant" not in text


def test_think_block_is_not_opened_twice_by_templates_that_open_it():
    class R1Like:  # a template that, like newer R1-distill ones, ends the generation prompt with "<think>\n"
        chat_template = "x"
        name_or_path = "r1-like"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            body = "".join(f"<{m['role']}>{m['content']}" for m in messages)
            return body + ("<Assistant><think>\n" if add_generation_prompt else "")

    text = reasoning_prompts.reasoning_prompt(R1Like(), "q", "")
    assert text == "<system><user>q<Assistant><think>\n"


def test_empty_prompt_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="prompt_text"):
        reasoning_prompts.reasoning_prompt(tokenizer, "", "")


# ----------------------------------------------------------------------------- trace text
def test_think_segment_keeps_the_longest_part_as_the_official_code():
    assert reasoning_prompts.think_segment("short</think>\n\nYes") == "short"
    assert reasoning_prompts.think_segment("a</think>a much longer answer part") == "a much longer answer part"
    assert reasoning_prompts.think_segment("never closed") == "never closed"


def test_extract_probability():
    assert traces.extract_probability("hmm no maybe</think>\n\nYes.") == 1.0
    assert traces.extract_probability("yes yes</think>\n\nNo.") == 0.0
    assert traces.extract_probability("thinking... the answer is yes") == 1.0  # last 20 chars
    assert traces.extract_probability("I do not know what to think") == 0.5  # "not"/"know" are no "no"


# ----------------------------------------------------------------------------- scoring
def test_trace_score_equals_the_plain_forward_on_the_concatenated_text(model, tokenizer):
    """P(Yes) of a trace = softmax over Yes/No of the model's last-position logits on
    chat(user=prompt) + "<think>\\n" + segment + "</think>\\n\\n", computed here with one plain unpadded forward
    per text (no batching, no buckets, no padding)."""
    import jax.numpy as jnp
    from flax import nnx

    trace_texts = ["I think so.</think>\n\nYes", "Maybe not, the user dislikes action"]
    prompts = [PROMPT, PROMPT + " Hm."]
    scorer = traces.TraceScorer(model, tokenizer, batch_size=2)
    got = scorer.score(prompts, trace_texts)
    yes, no = tok_lib.yes_no_ids(tokenizer)
    forward = nnx.jit(lambda m, t: m(t, jnp.arange(t.shape[1])[None, :], jnp.ones(t.shape, bool)))
    for i, (p, t) in enumerate(zip(prompts, trace_texts)):
        text = (tokenizer.apply_chat_template([{"role": "system", "content": ""}, {"role": "user", "content": p}],
                                              tokenize=False, add_generation_prompt=True)
                + "<think>\n" + reasoning_prompts.think_segment(t) + "</think>\n\n")
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        logits = np.asarray(forward(model, jnp.asarray([ids], jnp.int32)))[0, -1].astype(np.float64)  # [V]
        want = 1.0 / (1.0 + np.exp(-(logits[yes] - logits[no])))
        assert abs(got["softmax"][i] - want) < 2e-5
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        want_double = 1.0 / (1.0 + np.exp(-(probs[yes] - probs[no])))
        assert abs(got["double_softmax"][i] - want_double) < 2e-5
        assert got["text"][i] == traces.extract_probability(t)
    assert got["text"].tolist() == [1.0, 0.5]
    assert abs(got["softmax"][0] - got["softmax"][1]) > 1e-6  # the trace matters


def test_prefix_shared_trace_scores_equal_whole_trace_scores(model, tokenizer):
    """K traces of a prompt scored against one prefill of its opening = each opening + trace as one sequence
    (two prompts, 3 and 2 traces, interleaved in the aligned lists)."""
    prompts = [PROMPT, PROMPT + " Hm.", PROMPT, PROMPT + " Hm.", PROMPT]
    trace_texts = ["I think so.</think>\n\nYes", "Maybe not, the user dislikes action", "Heat is a crime film.",
                   "no idea", "She rated Toy Story 5 stars, so probably yes.</think>\n\nYes"]
    shared = traces.TraceScorer(model, tokenizer, batch_size=4).score(prompts, trace_texts)
    whole = traces.TraceScorer(model, tokenizer, batch_size=4, prefix_shared=False).score(prompts, trace_texts)
    for key in ("softmax", "double_softmax"):
        np.testing.assert_allclose(shared[key], whole[key], atol=1e-5)
    assert len(set(np.round(shared["softmax"], 6))) == 5  # every trace scored on its own


def test_score_rejects_misaligned_inputs(model, tokenizer):
    with pytest.raises(ValueError, match="prompt texts"):
        traces.TraceScorer(model, tokenizer).score([PROMPT], ["a", "b"])


# ----------------------------------------------------------------------------- sampling
def test_k_traces_share_a_prompt_differ_and_are_reproducible(model, tokenizer):
    gen = traces.TraceGenerator(model, tokenizer)
    texts = [reasoning_prompts.reasoning_prompt(tokenizer, PROMPT, hints.knowledge_hint(0.9)),
             reasoning_prompts.reasoning_prompt(tokenizer, PROMPT, "")]
    a = gen.generate(texts, num_samples=4, max_new_tokens=12, temperature=1.0, top_p=0.95, top_k=0, seed=7)
    b = gen.generate(texts, num_samples=4, max_new_tokens=12, temperature=1.0, top_p=0.95, top_k=0, seed=7)
    c = gen.generate(texts, num_samples=4, max_new_tokens=12, temperature=1.0, top_p=0.95, top_k=0, seed=8)
    assert len(a) == 2 and all(len(row) == 4 for row in a)
    assert [[t.text for t in row] for row in a] == [[t.text for t in row] for row in b]
    assert len({t.text for t in a[0]}) > 1  # the K samples of one prompt differ under temperature
    assert [[t.text for t in row] for row in a] != [[t.text for t in row] for row in c]
    for row in a:
        for t in row:
            assert 1 <= t.length <= 12 and (t.finished or t.length == 12)


def test_one_prefill_serves_all_k_traces(model, tokenizer, monkeypatch):
    """The sampler is asked for K samples of each prompt once: its prefill runs on [P] prompts, not [P*K]."""
    from rallrec_jax.llm import sampler as sampler_lib

    gen = traces.TraceGenerator(model, tokenizer)
    calls = []
    inner = sampler_lib._prefill

    def spy(graphdef, state, tokens, mask, **kw):
        calls.append((tokens.shape, kw["num_samples"]))
        return inner(graphdef, state, tokens, mask, **kw)

    monkeypatch.setattr(sampler_lib, "_prefill", spy)
    out = gen.generate([reasoning_prompts.reasoning_prompt(tokenizer, PROMPT, "")], num_samples=5, max_new_tokens=4,
                       temperature=0.6, top_p=0.95, top_k=0, seed=0)
    assert len(calls) == 1 and calls[0][0][0] == 1 and calls[0][1] == 5
    assert len(out[0]) == 5


def test_greedy_traces_match_a_plain_argmax_loop(model, tokenizer):
    """At temperature 0 every one of the K traces is the argmax continuation, recomputed here without a KV cache
    by the plain last-position forward (Scorer.next_token_logits) on the growing sequence."""
    gen = traces.TraceGenerator(model, tokenizer)
    text = reasoning_prompts.reasoning_prompt(tokenizer, PROMPT, "")
    out = gen.generate([text], num_samples=2, max_new_tokens=4, temperature=0.0, top_p=1.0, top_k=0, seed=0)
    plain = traces.TraceScorer(model, tokenizer).scorer
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    want = []
    for _ in range(4):
        nxt = int(np.argmax(plain.next_token_logits([ids])[0]))
        if nxt in gen.eos:
            break
        want.append(nxt)
        ids = ids + [nxt]
    for t in out[0]:
        assert t.text == tokenizer.decode(want, skip_special_tokens=True) and t.length == len(want)
