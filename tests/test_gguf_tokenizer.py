"""The GGUF tokenizer without torch: in a process where torch cannot be imported, the SmolLM2 file's tokenizer
gives the ids, chat texts and decodes of transformers' `AutoTokenizer.from_pretrained(dir, gguf_file=...)`
(the reference, run here where torch exists); and small GGUF files of both tokenizer models, written with the
`gguf` writer, build the same `tokenizers` pipeline as transformers does."""
import json
import os
import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest

from rallrec_jax import assets
from rallrec_jax.prompts import ctr as ctr_prompts
from rallrec_jax.llm import gguf_tokenizer as gt
from rallrec_jax.llm import tokenizer as tk
from rallrec_jax.reasoning import hints
from rallrec_jax.retrieval import descriptions
from rallrec_jax.prompts import descriptions as description_prompts

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Runs first in the child: every meta-path finder is wrapped so that `torch` (and its distribution metadata)
# is not found, as on a clean `pip install -e .`; an `import torch` anywhere raises ModuleNotFoundError.
HIDE_TORCH = r'''
import importlib.metadata as md
import sys

class HideTorch:
    def __init__(self, finders):
        self.finders = finders

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "torch":
            return None
        for finder in self.finders:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if find else None
            if spec is not None:
                return spec
        return None

    def find_distributions(self, context=md.DistributionFinder.Context()):
        for finder in self.finders:
            find = getattr(finder, "find_distributions", None)
            for dist in (find(context) if find else ()):
                if (dist.metadata["Name"] or "").lower() != "torch":
                    yield dist

    def invalidate_caches(self):
        for finder in self.finders:
            getattr(finder, "invalidate_caches", lambda: None)()

sys.meta_path[:] = [HideTorch(list(sys.meta_path))]
'''

CHILD = HIDE_TORCH + r'''
import json
try:
    import torch  # noqa: F401
    raise SystemExit("torch is importable in the child")
except ModuleNotFoundError:
    pass
from rallrec_jax import assets
from rallrec_jax.llm import tokenizer as tk

job = json.load(sys.stdin)
tok = tk.load_tokenizer(assets.smollm2_gguf())
chat = [tk.chat_prompt(tok, user, system=system) for system, user in job["chats"]]
out = {
    "chat_texts": chat,
    "chat_ids": tk.encode(tok, chat),
    "plain": [tok.encode(s, add_special_tokens=False) for s in job["strings"]],
    "special": [tok.encode(s, add_special_tokens=True) for s in job["strings"]],
    "decoded": [tok.decode(ids) for ids in job["id_lists"]],
    "decoded_skip": [tok.decode(ids, skip_special_tokens=True) for ids in job["id_lists"]],
    "tokens": {k: getattr(tok, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")},
    "token_ids": {k: getattr(tok, k) for k in ("bos_token_id", "eos_token_id", "unk_token_id", "pad_token_id")},
    "all_special_ids": tok.all_special_ids,
    "added": {str(i): [t.content, t.special] for i, t in tok.added_tokens_decoder.items()},
    "yes_no": list(tk.yes_no_ids(tok)), "space_yes_no": list(tk.yes_no_ids(tok, leading_space=True)),
    "len": len(tok), "chat_template": tok.chat_template,
    "torch_loaded": sorted(m for m in sys.modules if m.partition(".")[0] == "torch"),
}
json.dump(out, sys.stdout)
'''

TITLES = ["Toy Story (1995)", "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)", "8½ (1963)",
          "Crouching Tiger, Hidden Dragon (Wo hu cang long) (2000)", "Seven (Se7en) (1995)", "M*A*S*H (1970)",
          "Ça tourne à Manhattan (1995)", "Dr. Strangelove or: How I Learned to Stop Worrying (1963)",
          "千と千尋の神隠し (2001)", "Léon: The Professional", "The Lord of the Rings: The Two Towers (2002)"]
PIECES = ["hello", "World", "naïve", "façade", "Straße", "Ελληνικά", "русский", "עברית", "العربية", "हिन्दी",
          "中文", "日本語", "한국어", "🎉", "👩‍👩‍👧", "✓", "é", "e\u0301", "\u200b", "\u00a0", "\x00", "\x7f", "½",
          "1", "42", "1995", "3.14159", "-7", "1,000,000", "0x1F", "+1 (555) 010-9999", "2nd", "1e-5",
          "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "Yes", "No", " Yes", " No",
          "yes.", "No.", "'s", "'ll", "don't", "***", "...", "—", "“quoted”", "$100", "50%", "C++", "a_b",
          " ", "  ", "    ", "\t", "\n", "\n\n", "\r\n", " \n ", "\t\t \t"]


def _pipeline_texts() -> list[str]:
    """The prompts the pipeline builds: CTR prompts of the three templates, description prompts, title texts
    and knowledge hints."""
    texts = []
    profile = {"gender": "female", "job": "artist", "age": "25-34", "location": "zürich, zürich, switzerland"}
    for name in ("movielens-1m", "amazon", "bookcrossing"):
        for order in ("simple", "high", "rerank"):
            hist = ctr_prompts.history_list(TITLES[:5], [5, 1, 3, 4, 2])
            if name == "bookcrossing" and order != "simple":
                continue
            texts.append(ctr_prompts.template_for(name)(profile, hist, TITLES[5], order))
    fields = {"title": TITLES[1], "genre": "Comedy|Romance", "category": "Movies", "isbn": "0195153448",
              "author": "Mark P. O. Morford", "year": "2002", "publisher": "Oxford University Press"}
    for name in ("movielens-1m", "amazon", "bookcrossing"):
        texts.append(description_prompts.description_prompt(name, fields))
        texts.append(descriptions.title_text(name, fields))
    texts += [hints.knowledge_hint(p) for p in (0.05, 0.3, 0.5, 0.7, 0.95)]
    return texts


def _strings() -> list[str]:
    rng = random.Random(0)
    out = list(PIECES) + _pipeline_texts() + ["", "   leading", "trailing   ", "a  b   c    d"]
    for _ in range(240):
        n = rng.randint(1, 8)
        out.append("".join(rng.choice(PIECES) + rng.choice(["", " ", "", "  "]) for _ in range(n)))
    for _ in range(30):
        out.append(" ".join(str(rng.randint(0, 10 ** rng.randint(1, 9))) for _ in range(rng.randint(1, 5))))
    return out


def _chats() -> list[tuple[str | None, str]]:
    texts = _pipeline_texts()
    return ([(description_prompts.SYSTEM_MESSAGE, t) for t in texts[:4]] + [(None, t) for t in texts[4:8]]
            + [("", "Hi there, 日本語 and 🎉?"), ("You are a recommender.", "Toy Story (1995): Yes or No?")])


@pytest.fixture(scope="module")
def reference():
    pytest.importorskip("torch")
    from transformers import AutoTokenizer

    path = assets.smollm2_gguf()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.mark.slow
def test_smollm2_without_torch_matches_transformers(reference, tmp_path):
    strings = _strings()
    assert len(strings) > 300
    ref = reference
    rng = np.random.default_rng(0)
    id_lists = [ref.encode(s, add_special_tokens=False) for s in strings[:150]]
    id_lists += [rng.integers(0, len(ref), rng.integers(1, 40)).tolist() for _ in range(100)]
    id_lists += [[1, 9690, 198] + rng.integers(0, 17, 5).tolist() + [2]]  # special ids among text
    job = {"strings": strings, "chats": _chats(), "id_lists": id_lists}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps(job), capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout)
    assert got["torch_loaded"] == []

    # The chat prompts: template text and ids.
    want_chat = [ref.apply_chat_template(([] if s is None else [{"role": "system", "content": s}])
                                         + [{"role": "user", "content": u}], tokenize=False,
                                         add_generation_prompt=True) for s, u in job["chats"]]
    assert got["chat_texts"] == want_chat
    assert got["chat_ids"] == [ref.encode(t, add_special_tokens=False) for t in want_chat]
    assert got["chat_texts"][0].endswith("<|im_start|>assistant\n")
    assert got["chat_template"] == ref.chat_template
    # Every string, with and without special tokens, and decodes of the reference's and of random ids.
    for i, s in enumerate(strings):
        assert got["plain"][i] == ref.encode(s, add_special_tokens=False), s
        assert got["special"][i] == ref.encode(s, add_special_tokens=True), s
    for i, ids in enumerate(id_lists):
        assert got["decoded"][i] == ref.decode(ids), ids
        assert got["decoded_skip"][i] == ref.decode(ids, skip_special_tokens=True), ids
    assert got["decoded"][:150] == strings[:150]  # byte-level BPE round-trips exactly
    # Special tokens and the answer ids.
    assert got["tokens"] == {k: getattr(ref, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    assert got["token_ids"] == {k: getattr(ref, k) for k in ("bos_token_id", "eos_token_id", "unk_token_id",
                                                             "pad_token_id")}
    assert got["all_special_ids"] == ref.all_special_ids
    assert got["added"] == {str(i): [t.content, t.special] for i, t in ref.added_tokens_decoder.items()}
    assert got["yes_no"] == [ref.convert_tokens_to_ids("Yes"), ref.convert_tokens_to_ids("No")]
    assert got["space_yes_no"] == [ref.convert_tokens_to_ids("ĠYes"), ref.convert_tokens_to_ids("ĠNo")]
    assert got["len"] == len(ref) == 49152


# ----------------------------------------------------------------------------- written files of both models


def _write(path: pathlib.Path, model: str, tokens, types, *, pre=None, merges=None, scores=None, bos=None,
           eos=None, unk=None, pad=None, add_bos=None, chat="{{ messages[0]['content'] }}") -> pathlib.Path:
    import gguf

    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model(model)
    if pre:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    for value, add in ((merges, w.add_token_merges), (scores, w.add_token_scores), (bos, w.add_bos_token_id),
                       (eos, w.add_eos_token_id), (unk, w.add_unk_token_id), (pad, w.add_pad_token_id),
                       (add_bos, w.add_add_bos_token), (chat, w.add_chat_template)):
        if value is not None:
            add(value)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _llama3_like(folder: pathlib.Path, pre: str) -> pathlib.Path:
    """SmolLM2's byte-level vocabulary and merges with Llama-3's specials in place of its own (unused), a
    user-defined <think>, BOS added, and no <|endoftext|>."""
    meta = gt.read_metadata(assets.smollm2_gguf())
    tokens = [f"<|reserved_{i}|>" for i in range(17)] + meta["tokenizer.ggml.tokens"][17:]
    tokens += ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<think>"]
    types = [gt.UNUSED] * 17 + [gt.NORMAL] * (len(tokens) - 21) + [gt.CONTROL] * 3 + [gt.USER_DEFINED]
    n = len(tokens)
    return _write(folder / "model.gguf", "gpt2", tokens, types, pre=pre, merges=meta["tokenizer.ggml.merges"],
                  bos=n - 4, eos=n - 2, add_bos=True)


def _sentencepiece(folder: pathlib.Path, with_merges: bool) -> pathlib.Path:
    """A small Llama-2-style vocabulary: <unk>/<s>/</s>, the 256 byte tokens, characters, then word pieces
    scored by frequency; merges from the file or (as most such files) none."""
    words = ("the quick brown fox jumps over the lazy dog hello world recommend movie like yes no user "
             "watched rated stars").split()
    counts: dict[str, int] = {}
    for word in words:
        s = "▁" + word
        for i in range(len(s)):
            for j in range(i + 2, len(s) + 1):
                counts[s[i:j]] = counts.get(s[i:j], 0) + 1
    chars = sorted(set("".join(words)) | set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'*()") | {"▁"})
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + chars
    types = [gt.UNKNOWN, gt.CONTROL, gt.CONTROL] + [gt.BYTE] * 256 + [gt.NORMAL] * len(chars)
    scores = [0.0] * 259 + [-1000.0 - i for i in range(len(chars))]
    for k, (piece, _) in enumerate(sorted(counts.items(), key=lambda x: (-x[1], len(x[0]), x[0]))):
        if piece not in tokens:
            tokens.append(piece)
            types.append(gt.NORMAL)
            scores.append(-float(k))
    tokens.append("<|user|>")
    types.append(gt.USER_DEFINED)
    scores.append(0.0)
    merges = None
    if with_merges:
        vocab = {t: i for i, t in enumerate(tokens)}
        merges = [f"{a} {b}" for a, b in gt.merges_from_scores(vocab, dict(zip(tokens, scores)))][:150]
    return _write(folder / "model.gguf", "llama", tokens, types, scores=scores, merges=merges, bos=1, eos=2, unk=0)


CASES = {
    "gpt2-llama-bpe": lambda d: _llama3_like(d, "llama-bpe"),
    "gpt2-qwen2": lambda d: _llama3_like(d, "qwen2"),
    "llama-spm-scores": lambda d: _sentencepiece(d, with_merges=False),
    "llama-spm-merges": lambda d: _sentencepiece(d, with_merges=True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_written_files_build_what_transformers_builds(case, tmp_path):
    pytest.importorskip("torch")
    from transformers import AutoTokenizer

    path = CASES[case](tmp_path)
    ref = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ours = gt.load_gguf_tokenizer(path)  # as the file says (load_tokenizer also pads with EOS when it has no pad)
    want, got = json.loads(ref.backend_tokenizer.to_str()), json.loads(ours.backend_tokenizer.to_str())
    if case.startswith("gpt2"):
        # transformers' GPT-2 class appends its default <|endoftext|> one past the model's vocabulary; ours not.
        phantom = [t for t in want["added_tokens"] if t["content"] == "<|endoftext|>"]
        assert [t["id"] for t in phantom] == [len(got["model"]["vocab"])]
        want["added_tokens"] = [t for t in want["added_tokens"] if t not in phantom]
        assert len(ref) == len(ours) + 1
    else:
        assert len(ref) == len(ours)
    assert got == want
    for attr in ("bos_token", "eos_token", "unk_token", "pad_token", "add_bos_token", "chat_template",
                 "all_special_ids"):
        assert getattr(ours, attr) == getattr(ref, attr), attr
    for s in _strings():
        if "<|endoftext|>" in s and case.startswith("gpt2"):
            continue
        for special in (False, True):
            ids = ref.encode(s, add_special_tokens=special)
            assert ours.encode(s, add_special_tokens=special) == ids, (s, special)
            assert ours.decode(ids, skip_special_tokens=special) == ref.decode(ids, skip_special_tokens=special)


def test_sentencepiece_adds_bos_and_falls_back_to_bytes(tmp_path):
    """Hand-checked: BOS first (no add_bos_token flag: llama.cpp's default for SentencePiece), a character
    outside the vocabulary as its UTF-8 byte tokens, a leading '▁' on the first word only."""
    tok = tk.load_tokenizer(_sentencepiece(tmp_path, with_merges=False))
    ids = tok.encode("the ✓")
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[:2] == ["<s>", "▁the"]
    assert pieces[2:] == ["▁", "<0xE2>", "<0x9C>", "<0x93>"]  # "✓" = E2 9C 93
    assert tok.decode(ids, skip_special_tokens=True) == "the ✓"


def test_read_metadata_equals_the_gguf_reader():
    import gguf

    path = assets.smollm2_gguf()
    fields = gguf.GGUFReader(str(path)).fields
    meta = gt.read_metadata(path)
    assert set(meta) == {k for k in fields if not k.startswith("GGUF.")}
    for key in meta:
        assert meta[key] == fields[key].contents(), key


def test_bad_files_are_clear_errors(tmp_path):
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all, just bytes")
    with pytest.raises(ValueError, match="junk.gguf: unreadable GGUF model file .*: not a GGUF file"):
        tk.load_tokenizer(tmp_path / "junk.gguf")
    import gguf

    bare = tmp_path / "bare.gguf"
    w = gguf.GGUFWriter(str(bare), "llama")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match=r"bare.gguf: GGUF metadata has no 'tokenizer.ggml.tokens'"):
        tk.load_tokenizer(bare)
    t5 = _write(tmp_path / "t5" / "model.gguf", "t5", ["<pad>", "a"], [gt.CONTROL, gt.NORMAL], scores=[0.0, -1.0])
    with pytest.raises(ValueError, match=r"tokenizer.ggml.model='t5' is not supported"):
        tk.load_tokenizer(t5)
    bad_bos = _write(tmp_path / "bos" / "model.gguf", "gpt2", ["a", "b", "ab"], [gt.NORMAL] * 3, merges=["a b"],
                     bos=7)
    with pytest.raises(ValueError, match="bos_token_id=7 is outside the vocabulary of 3 tokens"):
        tk.load_tokenizer(bad_bos)
    bad_merge = _write(tmp_path / "merge" / "model.gguf", "gpt2", ["a", "b"], [gt.NORMAL] * 2, merges=["a b c"])
    with pytest.raises(ValueError, match=r"tokenizer.ggml.merges\[0\] = 'a b c' is not two tokens"):
        tk.load_tokenizer(bad_merge)
    unknown = _write(tmp_path / "unknown" / "model.gguf", "gpt2", ["a", "b"], [gt.NORMAL] * 2, merges=["a b"])
    with pytest.raises(ValueError, match=r"merges\[0\] = 'a b' needs \['ab'\], which tokenizer.ggml.tokens lacks"):
        tk.load_tokenizer(unknown)
