"""Tokenised instruction examples: (sample, ordered history) -> chat-templated prompt ids + answer ids.

The official training text is the chat-templated prompt (system = SYSTEM_PROMPT, user = the CTR prompt,
`add_generation_prompt=True`) followed by the answer "Yes." / "No." (paper-spec 3.2); the loss is masked on
every prompt token, so only the answer tokens (and the end-of-turn token the template closes an assistant
turn with) are learned. Prompt and answer are tokenised separately and concatenated, which is exactly what
scoring sees: the scored position is the one right after the prompt, whose target is the answer's first
token ("Yes" or "No"). `check_answer_tokens` holds the two consistent.

A history order is any callable `(split, index) -> list[HistoryEntry]`: `simple_history` is the `simple`
order (the K most recent items); retrieval supplies `high`, `sequential` and `rerank` through the same
interface. Prompts longer than `max_prompt_tokens` (counted on the templated prompt with the real
tokenizer) drop their oldest shown items (`PromptBuilder.build`), and the number of dropped items is kept.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from rallrec_jax.data import histories
from rallrec_jax.data.ctr import CTRData
from rallrec_jax.generation import prompts
from rallrec_jax.prompts import ctr as ctr_prompts
from rallrec_jax.llm import tokenizer as tok_lib

HistoryFn = Callable[[str, int], Sequence[histories.HistoryEntry]]


@dataclasses.dataclass(frozen=True)
class Example:
    split: str
    index: int  # row in the split
    order: str  # history order the prompt was built with
    prompt_ids: tuple[int, ...]  # chat-templated prompt, ends with the assistant header
    answer_ids: tuple[int, ...]  # "Yes."/"No." (+ EOS); empty for scoring-only examples
    label: int
    shown: int  # history items in the prompt
    dropped: int  # oldest history items dropped to fit max_prompt_tokens

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.answer_ids)


def simple_history(data: CTRData, k: int) -> HistoryFn:
    """The `simple` order: the K most recent history items (histories.recent_history)."""
    if k < 1:
        raise ValueError(f"k_history={k} must be >= 1")
    return lambda split, index: histories.recent_history(data, split, index, k)


def template_closes_with_eos(tokenizer) -> bool:
    """True when the chat template ends an assistant turn with the tokenizer's EOS token right after the
    content (ChatML `<|im_end|>`, Llama-3 `<|eot_id|>`): then the answer is trained with that EOS, as the
    official code's `add_eos_token=True` does."""
    if tokenizer.eos_token is None:
        return False
    msgs = [{"role": "user", "content": "q"}]
    head = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(msgs + [{"role": "assistant", "content": "Yes."}], tokenize=False)
    if not full.startswith(head):
        return False
    rest = full[len(head):]
    return rest.startswith("Yes." + tokenizer.eos_token)


class ExampleBuilder:
    """Prompt text -> token ids, for one data set and tokenizer; memoises the last tokenisation so the
    drop-oldest search and the final encode do not tokenise the same text twice."""

    def __init__(self, data: CTRData, tokenizer, max_prompt_tokens: int | None = None,
                 system_prompt: str = ctr_prompts.SYSTEM_PROMPT, append_eos: bool | None = None):
        self.data, self.tokenizer = data, tokenizer
        self.builder = prompts.PromptBuilder(data)
        self.max_prompt_tokens = max_prompt_tokens
        self.system_prompt = system_prompt
        self.append_eos = template_closes_with_eos(tokenizer) if append_eos is None else bool(append_eos)
        if self.append_eos and tokenizer.eos_token_id is None:
            raise ValueError("append_eos is set but the tokenizer has no eos_token_id")
        self.yes_no = tok_lib.yes_no_ids(tokenizer)
        self._answers = {label: self._answer_ids(label) for label in (0, 1)}
        self._memo: tuple[str, list[int]] | None = None

    def _answer_ids(self, label: int) -> tuple[int, ...]:
        ids = self.tokenizer.encode(ctr_prompts.answer_text(label), add_special_tokens=False)
        want = self.yes_no[0] if label == 1 else self.yes_no[1]
        if not ids or ids[0] != want:
            raise ValueError(f"answer {ctr_prompts.answer_text(label)!r} tokenises to {ids}, whose first token is not "
                             f"the scored {'Yes' if label == 1 else 'No'} id {want}")
        return tuple(ids) + ((int(self.tokenizer.eos_token_id),) if self.append_eos else ())

    def prompt_ids(self, user_text: str) -> list[int]:
        if self._memo is not None and self._memo[0] == user_text:
            return self._memo[1]
        text = tok_lib.chat_prompt(self.tokenizer, user_text, self.system_prompt)
        ids = tok_lib.encode(self.tokenizer, [text])[0]
        self._memo = (user_text, ids)
        return ids

    def count_tokens(self, user_text: str) -> int:
        return len(self.prompt_ids(user_text))

    def build(self, split: str, index: int, history: Sequence[histories.HistoryEntry], order: str,
              with_answer: bool = True) -> Example:
        prompt = self.builder.build(split, index, history, order,
                                    count_tokens=self.count_tokens if self.max_prompt_tokens else None,
                                    max_tokens=self.max_prompt_tokens)
        ids = self.prompt_ids(prompt.text)
        answer = self._answers[prompt.label] if with_answer else ()
        return Example(split, int(index), order, tuple(ids), answer, prompt.label, len(prompt.shown),
                       prompt.dropped)


def build_examples(builder: ExampleBuilder, split: str, rows: Sequence[int],
                   histories: Mapping[str, HistoryFn], orders: Sequence[str] | None = None,
                   with_answer: bool = True) -> list[Example]:
    """Examples for `rows` of a split; with several orders they interleave per row, in the given order
    (the official `mixed` set is [high, sequential, simple] per row)."""
    orders = list(histories) if orders is None else list(orders)
    missing = [o for o in orders if o not in histories]
    if missing:
        raise ValueError(f"history orders {missing} have no history function (have {sorted(histories)})")
    n = builder.data.num_samples(split)
    bad = [r for r in rows if not 0 <= int(r) < n]
    if bad:
        raise ValueError(f"{split} rows {bad[:5]} are outside the split's {n} samples")
    return [builder.build(split, int(r), histories[o](split, int(r)), o, with_answer) for r in rows for o in orders]


def dropped_report(examples: Sequence[Example]) -> dict:
    """How many prompts lost history items to the context limit (reported, never silent)."""
    dropped = np.array([e.dropped for e in examples], np.int64)
    return {"prompts": len(examples), "truncated_prompts": int((dropped > 0).sum()),
            "dropped_items": int(dropped.sum()),
            "max_prompt_tokens_seen": int(max((len(e.prompt_ids) for e in examples), default=0))}
