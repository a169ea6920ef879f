"""Reasoning traces: K sampled traces per knowledge-injected prompt, and each trace's P(Yes) (the prompt texts: prompts/reasoning.py).

Prompt (paper-spec 3.4). The reasoning model M_R sees the CTR prompt text, optionally followed by the
knowledge hint built from the general model's P_G (`hints.knowledge_hint`), in its own chat template:

  * clean (default): system "", user = prompt + HINT, `add_generation_prompt=True`, and the assistant
    turn opens with THINK_OPEN = "<think>\\n" (what the R1-distill templates emit themselves; when the
    template already ends with "<think>" nothing is added twice);
  * `official=True`: the released `inf_KP.py` string, system "", user = prompt + HINT + "\\n<think>",
    *without* the generation prompt (spec 6.4, bug 10), kept to reproduce the published runs.

No hint (HINT = "") gives the plain prompt of Tables 2/3.

Traces. K traces per prompt come from the jitted `Sampler`, which prefills each prompt once and repeats
its KV cache K times. `think_segment` follows the official code: split the generated text on "</think>"
and keep the longest segment (the reasoning is normally the long part; a trace that never closes its
think block is kept whole).

Trace scoring (clean version). The trace is teacher-forced into the assistant turn of the *plain*
prompt (no hint, as the official scorer) and P(Yes) is read at the answer position:

    chat(system "", user = prompt, add_generation_prompt=True) + THINK_OPEN + segment + "</think>\\n\\n"

THINK_OPEN is the exact text the generation prompt ended with, so the scored text is the model's own
continuation. The opening and the continuation (segment + "</think>\n\n") are tokenised separately, as
the sampler produced them, and the K traces of one prompt are scored against ONE prefill of the opening
(`Scorer.prefix_shared_logits`); `prefix_shared=False` runs each whole sequence instead (same ids, same
numbers, the opening computed K times). The logits at the last token give P(Yes) = softmax over the Yes/No logits (or, with
`double_softmax`, the official softmax over the two full-vocabulary probabilities). The official
scorer instead put the trace into the *user* turn and sampled two tokens; that is not reproduced.
`extract_probability` is the official text parser (1 / 0 / 0.5), an option only: hard 0/1 outputs
cannot give calibrated log-losses.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from rallrec_jax.llm import tokenizer as tok_lib
from rallrec_jax.llm.sampler import Sampler
from rallrec_jax.llm.scoring import Scorer, yes_probability_from_logits
from rallrec_jax.prompts.reasoning import THINK_CLOSE, assistant_opening, continuation_text, think_segment

_YES = re.compile(r"\byes\b")
_NO = re.compile(r"\bno\b")


def extract_probability(text: str) -> float:
    """The official string parser: 1.0 if "yes" is in the answer after the last "</think>", 0.0 if "no",
    else the same test on the last 20 characters, else 0.5. Words are matched whole ("not" is no "no")."""
    low = text.lower()
    candidates = []
    if THINK_CLOSE in low:
        candidates.append(low.rsplit(THINK_CLOSE, 1)[1])
    candidates.append(low[-20:])
    for part in candidates:
        if _YES.search(part):
            return 1.0
        if _NO.search(part):
            return 0.0
    return 0.5


@dataclasses.dataclass
class Trace:
    text: str  # decoded generation (special tokens skipped), EOS excluded
    length: int  # generated tokens, the stop token excluded
    finished: bool  # stopped at EOS (else ran into max_new_tokens)


class TraceGenerator:
    """K traces per prompt text with one shared prefill per prompt."""

    def __init__(self, model, tokenizer, mesh=None, extra_eos: Sequence[int] = ()):
        self.tokenizer = tokenizer
        self.eos = tok_lib.eos_ids(tokenizer, extra_eos)
        self.sampler = Sampler(model, self.eos, int(tokenizer.pad_token_id), mesh)

    def generate(self, prompt_texts: Sequence[str], num_samples: int, max_new_tokens: int, temperature: float,
                 top_p: float, top_k: int, seed: int) -> list[list[Trace]]:
        """[P] texts -> [P][K] traces. One sampler call: the result depends on (texts, seed) only."""
        ids = tok_lib.encode(self.tokenizer, prompt_texts)
        out = self.sampler(ids, max_new_tokens, num_samples=num_samples, temperature=temperature, top_p=top_p,
                           top_k=top_k, seed=seed)
        result = []
        for p, rows in enumerate(out.tokens):
            traces = []
            for k, toks in enumerate(rows):
                body = [t for t in toks if t not in self.eos]
                text = self.tokenizer.decode(body, skip_special_tokens=True)
                traces.append(Trace(text, len(body), bool(out.finished[p, k])))
            result.append(traces)
        return result


class TraceScorer:
    """P(Yes) of traces teacher-forced into the plain prompt's assistant turn, the traces of one prompt scored
    against one prefill of its opening (`prefix_shared=False`: each opening + trace as one sequence)."""

    def __init__(self, model, tokenizer, batch_size: int = 8, mesh=None, min_bucket: int = 16,
                 prefix_shared: bool = True):
        self.tokenizer = tokenizer
        self.yes_no = tok_lib.yes_no_ids(tokenizer)
        self.prefix_shared = prefix_shared
        self.scorer = Scorer(model, int(tokenizer.pad_token_id), batch_size=batch_size, mesh=mesh,
                             min_bucket=min_bucket)

    def logits(self, prompt_texts: Sequence[str], traces: Sequence[str]) -> np.ndarray:
        """Aligned lists (one prompt text per trace) -> [N, V] logits of the answer token."""
        if len(prompt_texts) != len(traces):
            raise ValueError(f"{len(prompt_texts)} prompt texts for {len(traces)} traces")
        groups: dict[str, list[int]] = {}  # prompt text -> its traces' positions, first-seen order
        for i, p in enumerate(prompt_texts):
            groups.setdefault(p, []).append(i)
        prompts = list(groups)
        openings = tok_lib.encode(self.tokenizer, [assistant_opening(self.tokenizer, p) for p in prompts])
        rests = tok_lib.encode(self.tokenizer, [continuation_text(think_segment(t)) for t in traces])
        if not self.prefix_shared:
            owner = {i: j for j, p in enumerate(prompts) for i in groups[p]}
            return self.scorer.next_token_logits([openings[owner[i]] + rests[i] for i in range(len(traces))])
        per_prompt = self.scorer.prefix_shared_logits(openings, [[rests[i] for i in groups[p]] for p in prompts])
        out = np.empty((len(traces), per_prompt[0].shape[-1]), np.float32)
        for p, rows in zip(prompts, per_prompt):
            out[groups[p]] = rows
        return out

    def score(self, prompt_texts: Sequence[str], traces: Sequence[str]) -> dict[str, np.ndarray]:
        """Aligned lists (one prompt text per trace) -> {"softmax", "double_softmax", "text"} [N] each."""
        logits = self.logits(prompt_texts, traces)  # [N, V]
        yes, no = self.yes_no
        return {
            "softmax": np.asarray(yes_probability_from_logits(logits, yes, no, False)),
            "double_softmax": np.asarray(yes_probability_from_logits(logits, yes, no, True)),
            "text": np.array([extract_probability(t) for t in traces], np.float64),
        }
