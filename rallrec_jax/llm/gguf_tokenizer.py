"""A GGUF file's tokenizer, built with `tokenizers` from its metadata: no torch.

transformers builds the same tokenizer with `AutoTokenizer.from_pretrained(dir, gguf_file=f)`, but that path
imports torch (its GGUF reader does), which only the test extra installs. This module reads the file's metadata
header itself and rebuilds what transformers 5 makes of it, piece by piece (model, pre-tokenizer, decoder,
post-processor, added tokens, special tokens, chat template), so the ids are the same:
tests/test_gguf_tokenizer.py holds the two equal on the real SmolLM2 file and on small written files of both
tokenizer models.

Two tokenizer models are supported, the ones Llama-family GGUF files use:
- `gpt2`: byte-level BPE (SmolLM2, Llama-3, Qwen2); the text split follows `tokenizer.ggml.pre`.
- `llama`: SentencePiece BPE with byte fallback (Llama-2, Mistral, TinyLlama); merges from the file, or
  rebuilt from the token scores when the file has none. As in transformers, the first word always gets its
  '▁' prefix (`tokenizer.ggml.add_space_prefix` is not read), and Gemma/Phi-3 files, whose tokenizers
  transformers builds in a shape of their own, are refused with the fix (their Hugging Face folder).

Deliberate difference: for a byte-level vocabulary without `<|endoftext|>` (Llama-3), transformers appends that
token as a new id one past the model's vocabulary (its GPT-2 class defaults); nothing here does, so a text
holding the literal string `<|endoftext|>` is split as plain text instead of mapping to an id the model's
embedding table does not have.

Nothing is cached: the tokenizer is rebuilt from the file on every load (well under a second for 49k merges).
"""
from __future__ import annotations

import dataclasses
import logging
import mmap
import os
import pathlib
import struct
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

# llama.cpp's token types (gguf.TokenType).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN35_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
                 r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                 r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                 r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT4O_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# `tokenizer.ggml.pre` -> the split regex its merges were learned with (transformers 5's table). A byte-level
# file whose pre-tokenizer is not listed splits with GPT-2's own regex, as transformers does.
PRE_TOKENIZER_SPLITS = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                     "jina-v5-nano", "dbrx", "smaug-bpe"), _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"), _QWEN2_SPLIT),
    "qwen35": _QWEN35_SPLIT,
    "tekken": _TEKKEN_SPLIT,
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), _GPT4O_SPLIT),
}
# Pre-tokenizers split with GPT-2's regex without a warning. `smollm` is among them because transformers splits
# it so (the ids this module must match), although llama.cpp and SmolLM2's own tokenizer.json first split every
# digit apart: the two differ on whitespace runs before a digit ("  89": "ĠĠ" "8" "9" there, "Ġ" "Ġ" "8" "9" here).
GPT2_SPLIT_PRE = ("default", "gpt2", "smollm")
# SentencePiece files whose architecture needs a tokenizer shape of its own (transformers special-cases them).
_OWN_SENTENCEPIECE = ("gemma", "gemma2", "gemma3", "gemma4", "phi3")


@dataclasses.dataclass(frozen=True)
class GgufTokenizerSpec:
    """The tokenizer fields of one GGUF file (llama.cpp's `tokenizer.*` keys)."""

    path: str
    architecture: str
    model: str  # tokenizer.ggml.model: "gpt2" or "llama"
    pre: str | None  # tokenizer.ggml.pre
    tokens: list[str]
    token_types: list[int]
    merges: list[str] | None
    scores: list[float] | None
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    add_bos: bool | None
    add_eos: bool | None
    chat_template: str | None

    def token(self, index: int | None, field: str) -> str | None:
        if index is None:
            return None
        if not 0 <= index < len(self.tokens):
            raise ValueError(f"{self.path}: tokenizer.ggml.{field}={index} is outside the vocabulary of "
                             f"{len(self.tokens)} tokens")
        return self.tokens[index]


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """A GGUF file's key/value metadata (v2 and v3, little-endian), without reading its tensors.

    A direct parse of the header: `gguf.GGUFReader` also maps every tensor and turns each of the ~100k
    vocabulary strings into a numpy view, which takes seconds where this takes a fraction of one."""
    path = str(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as blob:
        if blob[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
        version, n_tensors, count = struct.unpack_from("<IQQ", blob, 4)
        if version not in (2, 3):
            raise ValueError(f"{path}: GGUF version {version} (read little-endian) is not 2 or 3; a big-endian "
                             "or v1 file needs converting with llama.cpp's gguf tools")
        pos = 24

        def string(pos: int) -> tuple[str, int]:
            (n,) = struct.unpack_from("<Q", blob, pos)
            try:
                return blob[pos + 8:pos + 8 + n].decode("utf-8"), pos + 8 + n
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}: the metadata string at byte {pos} is not UTF-8 ({exc})") from None

        def value(kind: int, pos: int):
            if kind in _SCALARS:
                return struct.unpack_from(_SCALARS[kind], blob, pos)[0], pos + struct.calcsize(_SCALARS[kind])
            if kind == _STRING:
                return string(pos)
            if kind != _ARRAY:
                raise ValueError(f"{path}: unknown GGUF metadata value type {kind} at byte {pos}")
            sub, n = struct.unpack_from("<IQ", blob, pos)
            pos += 12
            if sub in _SCALARS:
                fmt = _SCALARS[sub]
                width = struct.calcsize(fmt)
                return list(struct.unpack_from(f"<{n}{fmt[1]}", blob, pos)), pos + n * width
            out = []
            for _ in range(n):
                item, pos = value(sub, pos)
                out.append(item)
            return out, pos

        meta = {}
        for _ in range(count):
            key, pos = string(pos)
            (kind,) = struct.unpack_from("<I", blob, pos)
            meta[key], pos = value(kind, pos + 4)
        _check_tensor_extent(path, blob, pos, n_tensors, int(meta.get("general.alignment", 32)), string)
    return meta


def _check_tensor_extent(path: str, blob, pos: int, n_tensors: int, alignment: int, string) -> None:
    """Raises when the tensor infos after the metadata promise more bytes than the file holds (a truncated copy):
    the tokenizer alone would read, but the model file is damaged, and a run should hear so before it starts."""
    from gguf.constants import GGML_QUANT_SIZES

    end = 0
    for _ in range(n_tensors):
        _, pos = string(pos)
        (n_dims,) = struct.unpack_from("<I", blob, pos)
        dims = struct.unpack_from(f"<{n_dims}Q", blob, pos + 4)
        kind, offset = struct.unpack_from("<IQ", blob, pos + 4 + 8 * n_dims)
        pos += 4 + 8 * n_dims + 12
        block, size = GGML_QUANT_SIZES[kind]
        count = 1
        for d in dims:
            count *= d
        end = max(end, offset + count // block * size)
    start = -(-pos // alignment) * alignment
    if start + end > len(blob):
        raise ValueError(f"{path}: its tensor table promises {start + end:,} bytes, the file holds {len(blob):,}")


def read_spec(path: str | os.PathLike) -> GgufTokenizerSpec:
    """The tokenizer fields of a GGUF file; a clear error naming the file and field when one is missing."""
    path = str(path)
    meta = read_metadata(path)

    def need(key: str):
        if key not in meta:
            raise ValueError(f"{path}: GGUF metadata has no {key!r}, so it holds no tokenizer; load the model's "
                             "tokenizer from its Hugging Face folder instead")
        return meta[key]

    tokens = need("tokenizer.ggml.tokens")
    types = meta.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    if len(types) != len(tokens):
        raise ValueError(f"{path}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
    scores = meta.get("tokenizer.ggml.scores")
    if scores is not None and len(scores) != len(tokens):
        raise ValueError(f"{path}: tokenizer.ggml.scores has {len(scores)} entries for {len(tokens)} tokens")
    return GgufTokenizerSpec(
        path=path, architecture=str(meta.get("general.architecture", "")), model=str(need("tokenizer.ggml.model")),
        pre=meta.get("tokenizer.ggml.pre"), tokens=list(tokens), token_types=[int(t) for t in types],
        merges=meta.get("tokenizer.ggml.merges"), scores=None if scores is None else [float(s) for s in scores],
        bos_id=meta.get("tokenizer.ggml.bos_token_id"), eos_id=meta.get("tokenizer.ggml.eos_token_id"),
        unk_id=meta.get("tokenizer.ggml.unknown_token_id"), pad_id=meta.get("tokenizer.ggml.padding_token_id"),
        add_bos=meta.get("tokenizer.ggml.add_bos_token"), add_eos=meta.get("tokenizer.ggml.add_eos_token"),
        chat_template=meta.get("tokenizer.chat_template"))


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the alphabet byte-level vocabularies are spelled in)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, map(chr, chars)))


def _split_merges(spec: GgufTokenizerSpec, vocab: dict[str, int]) -> list[tuple[str, str]]:
    """`tokenizer.ggml.merges` as pairs, each checked (tokenizers would panic on a merge outside the vocabulary)."""
    out = []
    for i, merge in enumerate(spec.merges or ()):
        parts = merge.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{spec.path}: tokenizer.ggml.merges[{i}] = {merge!r} is not two tokens split by "
                             "one space")
        missing = [t for t in (parts[0], parts[1], parts[0] + parts[1]) if t not in vocab]
        if missing:
            raise ValueError(f"{spec.path}: tokenizer.ggml.merges[{i}] = {merge!r} needs {missing}, which "
                             "tokenizer.ggml.tokens lacks")
        out.append((parts[0], parts[1]))
    return out


def merges_from_scores(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """SentencePiece BPE merges implied by a vocabulary: every split of a token into two vocabulary tokens,
    best token score first (then the shorter left part), as transformers' `generate_merges` orders them."""
    merges = []
    for merge, score in scores.items():
        local = [(merge[:i], merge[i:], score) for i in range(1, len(merge))
                 if merge[:i] in vocab and merge[i:] in vocab]
        merges.extend(sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]])))
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


def _byte_level_backend(spec: GgufTokenizerSpec) -> Tokenizer:
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {(t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8"))): i
             for i, t in enumerate(spec.tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=_split_merges(spec, vocab), dropout=None,
                               continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    split = PRE_TOKENIZER_SPLITS.get(spec.pre)
    if split is None:
        if spec.pre not in GPT2_SPLIT_PRE and spec.pre is not None:
            logging.warning("%s: tokenizer.ggml.pre=%r is not a pre-tokenizer this loader knows; splitting text "
                            "with GPT-2's regex, as transformers does", spec.path, spec.pre)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                              use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    # Control tokens (e.g. <|im_start|>) stay whole and are special. In a byte-level vocabulary every real
    # token is spelled in the byte alphabet; one marked control that is not is a llama.cpp mislabel, skipped.
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                            for t, kind in zip(spec.tokens, spec.token_types)
                            if kind == CONTROL and set(t) <= alphabet])
    return tok


def _sentencepiece_backend(spec: GgufTokenizerSpec) -> Tokenizer:
    if spec.architecture in _OWN_SENTENCEPIECE:
        raise ValueError(f"{spec.path}: a {spec.architecture!r} GGUF's SentencePiece tokenizer needs a shape of its "
                         "own that this loader does not build; load the tokenizer from the model's Hugging Face "
                         "folder instead")
    vocab = {t: i for i, t in enumerate(spec.tokens)}
    if spec.merges is not None:
        merges = _split_merges(spec, vocab)
    elif spec.scores is not None:
        merges = merges_from_scores(vocab, dict(zip(spec.tokens, spec.scores)))
    else:
        raise ValueError(f"{spec.path}: a 'llama' tokenizer needs tokenizer.ggml.merges or tokenizer.ggml.scores")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=True, byte_fallback=True, dropout=None))
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1)])
    # SentencePiece's own specials (<unk> is typed UNKNOWN, not CONTROL) are special, as in a Llama tokenizer.
    named = {"<unk>", "<s>", "</s>"}
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                            for t, kind in zip(spec.tokens, spec.token_types)
                            if kind == CONTROL or (t in named and t in vocab)])
    return tok


def build_backend(spec: GgufTokenizerSpec) -> Tokenizer:
    """The `tokenizers.Tokenizer` of a GGUF tokenizer: model, split, decoder, added and special tokens, and the
    post-processor that adds BOS/EOS as the file asks (`add_bos_token`, default on for `llama`)."""
    if spec.model == "gpt2":
        tok = _byte_level_backend(spec)
    elif spec.model == "llama":
        tok = _sentencepiece_backend(spec)
    else:
        raise ValueError(f"{spec.path}: tokenizer.ggml.model={spec.model!r} is not supported (only 'gpt2' and "
                         "'llama'); load the tokenizer from the model's Hugging Face folder instead")
    # User-defined tokens (e.g. <think>) are matched whole but are not special.
    vocab = tok.get_vocab(with_added_tokens=True)
    tok.add_tokens([AddedToken(t, normalized=False, special=False)
                    for t, kind in zip(spec.tokens, spec.token_types) if kind == USER_DEFINED and t in vocab])
    tok.post_processor = _post_processor(spec)
    return tok


def _add_bos(spec: GgufTokenizerSpec) -> bool:
    # Older llama files have no flag; llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise.
    return bool(spec.add_bos if spec.add_bos is not None else spec.model == "llama")


def _post_processor(spec: GgufTokenizerSpec) -> processors.TemplateProcessing:
    bos, eos = spec.token(spec.bos_id, "bos_token_id"), spec.token(spec.eos_id, "eos_token_id")
    add_bos, add_eos = _add_bos(spec) and bos is not None, bool(spec.add_eos) and eos is not None
    single = f"{bos + ':0 ' if add_bos else ''}$A:0{' ' + eos + ':0' if add_eos else ''}"
    pair = f"{single}{' ' + bos + ':1' if add_bos else ''} $B:1{' ' + eos + ':1' if add_eos else ''}"
    specials = ([(bos, spec.bos_id)] if add_bos else []) + ([(eos, spec.eos_id)] if add_eos else [])
    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


def load_gguf_tokenizer(path: str | os.PathLike, spec: GgufTokenizerSpec | None = None):
    """A transformers fast tokenizer (`PreTrainedTokenizerFast`) for a GGUF file: its vocabulary, chat template,
    bos/eos/unk/pad tokens and BOS/EOS flags, without torch."""
    from transformers import PreTrainedTokenizerFast

    spec = spec or read_spec(path)
    return PreTrainedTokenizerFast(
        tokenizer_object=build_backend(spec), name_or_path=str(pathlib.Path(path)),
        bos_token=spec.token(spec.bos_id, "bos_token_id"), eos_token=spec.token(spec.eos_id, "eos_token_id"),
        unk_token=spec.token(spec.unk_id, "unknown_token_id"), pad_token=spec.token(spec.pad_id, "padding_token_id"),
        add_bos_token=_add_bos(spec), add_eos_token=bool(spec.add_eos), chat_template=spec.chat_template,
        clean_up_tokenization_spaces=False)

