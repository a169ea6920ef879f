"""Real SmolLM2-135M-Instruct (Q4_1 GGUF): our loader + model + sampler + scorer against transformers,
which dequantises the same file (needs torch, gguf and accelerate)."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from rallrec_jax import assets  # noqa: E402
from rallrec_jax.llm import tokenizer as tk  # noqa: E402
from rallrec_jax.llm import weights  # noqa: E402
from rallrec_jax.llm.sampler import Sampler  # noqa: E402
from rallrec_jax.llm.scoring import Scorer  # noqa: E402

pytestmark = pytest.mark.slow

QUESTIONS = ["Write a short story about a cat who learns to cook.",
             "Given a user who liked Toy Story and Aladdin, will they like The Lion King? Answer Yes or No."]


@pytest.fixture(scope="module")
def smollm2():
    path = assets.smollm2_gguf()
    torch.set_num_threads(2)
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                            dtype=torch.float32).eval()
    tok = tk.load_tokenizer(path)
    ours = weights.load_gguf(path)
    prompts = tk.encode(tok, [tk.chat_prompt(tok, q) for q in QUESTIONS])
    return ref, ours, tok, prompts


def test_logits_match_transformers(smollm2):
    ref, ours, _, prompts = smollm2
    length = max(map(len, prompts))
    tokens, mask = tk.pad_batch(prompts, length, pad_id=0, side="right")
    forward = nnx.jit(lambda m, t: m(t, jnp.broadcast_to(jnp.arange(length), t.shape)))
    batch_logits = np.asarray(forward(ours, jnp.asarray(tokens)))  # right padding: causal, so exact per row
    for ids, row in zip(prompts, batch_logits):
        with torch.no_grad():
            want = ref(input_ids=torch.tensor([ids])).logits[0].numpy()
        got = row[: len(ids)]
        diff = np.abs(got - want).max()
        print(f"SmolLM2 GGUF: {len(ids)} tokens, max |logit diff| = {diff:.2e} (max |logit| {np.abs(want).max():.1f})")
        assert diff < 5e-4  # 30 float32 layers; logits of magnitude ~30
        assert (got.argmax(-1) == want.argmax(-1)).all()


def test_greedy_generation_matches_transformers(smollm2):
    ref, ours, tok, prompts = smollm2
    sampler = Sampler(ours, eos_ids=tk.eos_ids(tok), pad_id=tok.pad_token_id)
    got = sampler(prompts, max_new_tokens=32, temperature=0.0).tokens
    for ids, ours_out in zip(prompts, got):
        with torch.no_grad():
            want = ref.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False,
                                pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
        print(repr(tok.decode(ours_out[0])))
        assert ours_out[0] == want
    assert len(got[0][0]) == 32  # the story prompt runs the full 32 greedy steps without stopping


def test_yes_probability_matches_transformers(smollm2):
    ref, ours, tok, prompts = smollm2
    yes, no = tk.yes_no_ids(tok)
    assert tok.decode([yes]) == "Yes" and tok.decode([no]) == "No"
    space_yes, space_no = tk.yes_no_ids(tok, leading_space=True)
    assert tok.decode([space_yes]) == " Yes" and space_yes != yes and space_no != no
    with pytest.raises(ValueError, match="not a single token"):
        tk.single_token_id(tok, "Yesterday's news")
    for padding_side in ("left",):  # right padding: tests/test_llm_scoring.py (tiny model)
        scorer = Scorer(ours, pad_id=tok.pad_token_id, batch_size=2, padding_side=padding_side)
        p_plain = scorer.yes_probability(prompts, yes, no)
        p_double = scorer.yes_probability(prompts, yes, no, double_softmax=True)
        for i, ids in enumerate(prompts):
            with torch.no_grad():
                logits = ref(input_ids=torch.tensor([ids])).logits[0, -1].double()
            want_plain = torch.softmax(logits[[yes, no]], 0)[0].item()
            probs = torch.softmax(logits, 0)
            want_double = torch.softmax(probs[[yes, no]], 0)[0].item()
            assert abs(p_plain[i] - want_plain) < 1e-4, (padding_side, p_plain[i], want_plain)
            assert abs(p_double[i] - want_double) < 1e-5
    assert ((p_double > 0.2689) & (p_double < 0.7311)).all()


def test_prefix_shared_trace_scores_equal_whole_trace_scores(smollm2):
    """Real SmolLM2: reasoning traces of two prompts scored against one prefill per prompt equal the scores of
    each whole scored sequence."""
    from rallrec_jax.reasoning import traces

    _, ours, tok, _ = smollm2
    prompts = [QUESTIONS[1], QUESTIONS[0], QUESTIONS[1]]
    texts = ["The Lion King is an animated Disney film like the other two.</think>\n\nYes",
             "A cat in a kitchen, whiskers twitching.", "The user likes animation, so maybe."]
    shared = traces.TraceScorer(ours, tok, batch_size=4).score(prompts, texts)
    whole = traces.TraceScorer(ours, tok, batch_size=4, prefix_shared=False).score(prompts, texts)
    np.testing.assert_allclose(shared["softmax"], whole["softmax"], atol=1e-5)
    np.testing.assert_allclose(shared["double_softmax"], whole["double_softmax"], atol=1e-5)
