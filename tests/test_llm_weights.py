"""A GGUF model file that is not GGUF, or is cut short, is an error naming the file and the fix, from both the
model loader and the tokenizer (the GGUF reader's own "GGUF magic invalid" / "cannot reshape" name neither)."""
import numpy as np
import pytest

from rallrec_jax import assets
from rallrec_jax.llm import tokenizer as tok_lib
from rallrec_jax.llm import weights


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    real = assets.smollm2_gguf().read_bytes()
    (folder / "random.gguf").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "truncated.gguf").write_bytes(real[:3_000_000])  # header and vocabulary whole, tensors cut
    return folder


@pytest.mark.parametrize("load", [weights.load, tok_lib.load_tokenizer], ids=["model", "tokenizer"])
def test_random_bytes_are_not_a_gguf_file(damaged, load):
    path = damaged / "random.gguf"
    with pytest.raises(ValueError, match=rf"{path}: unreadable GGUF model file \(5,000 bytes\): it does not start "
                                         r"with the GGUF magic bytes .*: not a GGUF file .* Download or copy it again"):
        load(path)


@pytest.mark.parametrize("load", [weights.load, tok_lib.load_tokenizer], ids=["model", "tokenizer"])
def test_a_truncated_gguf_file_is_named(damaged, load):
    path = damaged / "truncated.gguf"
    with pytest.raises(ValueError, match=rf"{path}: unreadable GGUF model file \(3,000,000 bytes\): its header "
                                         r"promises more than the file holds: truncated .*model\.path"):
        load(path)
