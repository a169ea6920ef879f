"""The scoring API: `score` / `score_batch` equal the pipeline's P(Yes) (`generation.evaluate.evaluate`) on the
same rows, zero-shot and with adapters given as our saved folder or as a PEFT folder; a request's candidates
are scored independently of how they are batched; the MovieLens prompt is the official template's text; bad
requests are errors naming the request and the field. Tiny random Llama (tests/tiny_llm.py) on the real
Amazon-magazine data of configs/test.py."""
import jax
import numpy as np
import pytest
from flax import nnx

import configs.test
from rallrec_jax import checkpoint, parallel
from rallrec_jax.api import Recommender, ScoreSettings, profile_fields
from rallrec_jax.data import prepare
from rallrec_jax.generation import evaluate as ev
from rallrec_jax.generation import inputs
from rallrec_jax.llm import lora as lora_lib
from rallrec_jax.llm import peft as peft_lib
from rallrec_jax.llm import tokenizer as tok_lib
from rallrec_jax.llm import weights

ROWS = 24


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare.prepare_data(configs.test.get_config().data, tmp_path_factory.mktemp("work"))


def requests_for(data, split, rows):
    """Each row of the split as a request: its user's profile, its rated history (oldest first), its target."""
    titles, s = data.item_fields["title"], data.samples[split]
    out = []
    for r in rows:
        h = data.history(split, r)
        profile = {f: str(v[s["user"][r]]) for f, v in data.user_fields.items()}
        out.append((profile, [(str(titles[i]), int(x)) for i, x in zip(h["item"], h["rating"])],
                    [str(titles[s["item"][r]])]))
    return out


def pipeline_probabilities(config, data, tiny_llm, tmp_path, adapters=""):
    mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
    result = ev.evaluate(config, tmp_path, adapters, data=data, model=weights.load_hf(tiny_llm),
                         tokenizer=tok_lib.load_tokenizer(tiny_llm), mesh=mesh, num_rows=ROWS)
    return result["probabilities"]


def test_score_equals_the_pipeline_zero_shot_and_tuned(data, tiny_llm, tmp_path):
    config = configs.test.get_config()
    settings = ScoreSettings.from_config(config)
    assert (settings.dataset, settings.k_history, settings.max_prompt_tokens) == ("amazon", 5, 512)
    requests = requests_for(data, "test", range(ROWS))

    want = pipeline_probabilities(config, data, tiny_llm, tmp_path)
    rec = Recommender.load(tiny_llm, settings=settings)
    got = np.concatenate(rec.score_batch(requests))
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    np.testing.assert_allclose(rec.score(*requests[3]), want[3:4], atol=1e-6, rtol=0)

    # Adapters of the config's LoRA layout with non-zero B, saved as ours and exported as PEFT.
    model = lora_lib.apply_lora(weights.load_hf(tiny_llm), inputs.lora_config(config.lora), rngs=nnx.Rngs(4))
    for node in lora_lib.lora_modules(model).values():
        node.lora_b.set_value(jax.random.normal(jax.random.key(1), node.lora_b.get_value().shape) * 0.3)
    checkpoint.save_adapters(tmp_path / "ours", 1, model)
    peft_lib.export_peft(model, tmp_path / "peft")
    tuned = pipeline_probabilities(config, data, tiny_llm, tmp_path, adapters=str(tmp_path / "ours"))
    assert np.abs(tuned - want).max() > 1e-3
    for folder in ("ours", "peft"):
        rec = Recommender.load(tiny_llm, adapters=tmp_path / folder, settings=settings)
        np.testing.assert_allclose(np.concatenate(rec.score_batch(requests)), tuned, atol=1e-6, rtol=0)


def test_candidates_are_scored_independently_of_their_batch(data, tiny_llm):
    config = configs.test.get_config()
    rec = Recommender.load(tiny_llm, settings=ScoreSettings.from_config(config), batch_size=4)
    profile, history, (target,) = requests_for(data, "test", [5])[0]
    titles = [str(t) for t in data.item_fields["title"][:9]]
    together = rec.score(profile, history, [target, *titles])
    alone = np.array([rec.score(profile, history, [t])[0] for t in [target, *titles]])
    np.testing.assert_allclose(together, alone, atol=1e-6, rtol=0)
    np.testing.assert_allclose(rec.score(profile, history, [*titles, target])[-1], together[0], atol=1e-6)
    split = rec.score_batch([(profile, history, titles[:4]), (profile, history[:-2], titles[4:])])
    assert [len(p) for p in split] == [4, 5]
    np.testing.assert_allclose(split[0], together[1:5], atol=1e-6, rtol=0)
    assert np.abs(split[1] - together[5:]).max() > 0  # a shorter history is another prompt


MOVIELENS_USER_TURN = """The user is a female. Her job is writer. Her age is 25.
She watched the following movies in order in the past, and rated them:
['Heat (1995) (1 star)', 'Casino (1995) (4 stars)']
Note that more stars the user rated the movie, the user liked the movie more.
And we think the user will like a new movie if the rating could be higher than 3 stars
Based on the movies she has watched, deduce if she will like the movie ***Aladdin (1992)***.
You should ONLY tell me yes or no."""


@pytest.fixture(scope="module")
def movielens(tiny_llm):
    return Recommender.load(tiny_llm, dataset="movielens", k_history=2)


def test_movielens_prompt_is_the_official_template(movielens):
    assert profile_fields("movielens") == ("gender", "job", "age")
    assert profile_fields("bookcrossing") == ("location", "age") and profile_fields("amazon") == ()
    profile = {"gender": "female", "job": "writer", "age": 25, "zip": "ignored"}
    history = [("Toy Story (1995)", 5), {"title": "Heat (1995)", "rating": 1}, ("Casino (1995)", 4.0)]
    (text,) = movielens.prompts(profile, history, ["Aladdin (1992)"])
    tok = movielens.tokenizer
    want = tok_lib.chat_prompt(tok, MOVIELENS_USER_TURN, "You are a friendly and helpful assistant who always "
                                                         "responds to the query from users.")
    assert text == want  # k_history=2: the two most recent, oldest first; Toy Story left out
    p = movielens.score(profile, history, ["Aladdin (1992)", "Heat (1995)"])
    assert p.shape == (2,) and ((p > 0) & (p < 1)).all()


@pytest.mark.parametrize("request_, message", [
    (({"gender": "male", "age": 30}, [("Heat (1995)", 4)], ["Casino (1995)"]),
     r"request 0: profile lacks \['job'\] \(the movielens prompt shows \['gender', 'job', 'age'\]\)"),
    (({"gender": "male", "job": "x", "age": 1}, [("Heat (1995)", "five")], ["Casino (1995)"]),
     r"request 0: history item 0 \('Heat \(1995\)'\) has rating 'five', not a whole number of stars"),
    (({"gender": "male", "job": "x", "age": 1}, [("Heat (1995)", 3.5)], ["Casino (1995)"]),
     r"has rating 3.5, not a whole number"),
    (({"gender": "male", "job": "x", "age": 1}, [("Heat (1995)",)], ["Casino (1995)"]),
     r"history item 0 \('Heat \(1995\)',\) is not \(title, rating\)"),
    (({"gender": "male", "job": "x", "age": 1}, [], []), r"request 0: no candidates to score"),
    (({"gender": "male", "job": "x", "age": 1}, [], "Casino (1995)"), r"candidates must be a list of titles"),
])
def test_bad_requests_are_named(movielens, request_, message):
    with pytest.raises(ValueError, match=message):
        movielens.score(*request_)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=r"dataset='netflix' must be one of \('movielens', 'amazon', 'bookcrossing'\)"):
        ScoreSettings(dataset="netflix")
    with pytest.raises(ValueError, match="order='best' must be one of"):
        ScoreSettings(order="best")
    with pytest.raises(ValueError, match="k_history=0 must be >= 1"):
        ScoreSettings(k_history=0)
