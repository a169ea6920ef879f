"""The reasoning model's prompts (paper-spec 3.4): the knowledge-injected prompt in its chat template, clean or
as the official `inf_KP.py` wrote it, and the teacher-forced text a trace is scored with. The design notes
(why THINK_OPEN, why the plain prompt is scored) are in reasoning/traces.py, which samples and scores them.
"""
from __future__ import annotations

THINK_OPEN = "<think>\n"
THINK_CLOSE = "</think>"
ANSWER_GAP = "\n\n"  # between "</think>" and the answer, as R1-distill models write it


def _chat(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    if tokenizer.chat_template is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no chat template")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_opening(tokenizer, user: str) -> str:
    """Chat-templated [system "", user] with the generation prompt, ending in THINK_OPEN (added only when the
    template does not already open the think block itself, as newer R1-distill templates do)."""
    text = _chat(tokenizer, [{"role": "system", "content": ""}, {"role": "user", "content": user}], True)
    if text.rstrip().endswith("<think>"):
        return text if text.endswith("\n") else text + "\n"
    return text + THINK_OPEN


def reasoning_prompt(tokenizer, prompt_text: str, hint: str = "", official: bool = False) -> str:
    """The reasoning model's input text for one sample: CTR prompt + hint ("" = plain prompt)."""
    if not prompt_text:
        raise ValueError("prompt_text is empty")
    if official:  # inf_KP.py: "<think>" inside the user turn, no generation prompt (spec 6.4, bug 10).
        return _chat(tokenizer, [{"role": "system", "content": ""},
                                 {"role": "user", "content": prompt_text + hint + "\n<think>"}], False)
    return assistant_opening(tokenizer, prompt_text + hint)


def think_segment(text: str) -> str:
    """The official trace extraction: split on "</think>", keep the longest segment (first on ties)."""
    parts = text.split(THINK_CLOSE)
    return max(parts, key=len)


def scoring_text(tokenizer, prompt_text: str, segment: str) -> str:
    """The teacher-forced text whose next token is the answer: plain prompt + think block + gap."""
    return assistant_opening(tokenizer, prompt_text) + continuation_text(segment)


def continuation_text(segment: str) -> str:
    """What follows the assistant opening in the scored text: the trace's think segment, closed, then the gap."""
    return segment + THINK_CLOSE + ANSWER_GAP
