"""Hub models come from the standard Hugging Face cache: a snapshot written here in the hub's own layout
(blobs, refs, snapshots; `huggingface_hub.scan_cache_dir` reads it back) under `HF_HOME` is found by name, by
branch and by commit, with its tokenizer and chat template, and with no network call; a missing or
incomplete snapshot is an error naming the cache and the missing files; the download patterns keep every
tokenizer and chat-template file of a real repository listing and nothing else. No network is used."""
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from rallrec_jax import assets
from tests.tiny_llm import make_tiny_llm

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAIN, V2, V3 = "a" * 40, "b" * 40, "c" * 40


def add_snapshot(hub: pathlib.Path, repo: str, commit: str, files: pathlib.Path, refs=(), skip=()) -> pathlib.Path:
    """One commit of `repo` in the hub cache layout: each file a blob named by its sha256, linked from
    snapshots/<commit>/; `refs` (branch names) point at the commit."""
    storage = hub / ("models--" + repo.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in sorted(files.iterdir()):
        if f.name in skip:
            continue
        blob = storage / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    for ref in refs:
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture(scope="module")
def hf_home(tiny_llm, tmp_path_factory):
    home = tmp_path_factory.mktemp("hf_home")
    other = make_tiny_llm(tmp_path_factory.mktemp("tiny2") / "llm", seed=1)
    add_snapshot(home / "hub", "org/tiny", MAIN, tiny_llm, refs=("main",))
    add_snapshot(home / "hub", "org/tiny", V2, other, refs=("v2",))
    add_snapshot(home / "hub", "org/tiny", V3, tiny_llm, refs=("v3",), skip=("model.safetensors",))
    return home


def test_the_layout_is_the_hubs(hf_home):
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(hf_home / "hub")
    assert not info.warnings
    (repo,) = info.repos
    assert repo.repo_id == "org/tiny" and {r.commit_hash for r in repo.revisions} == {MAIN, V2, V3}
    assert {ref for r in repo.revisions for ref in r.refs} == {"main", "v2", "v3"}


SCRIPT = """
import json, sys
from rallrec_jax import assets
from rallrec_jax.llm import tokenizer, weights
out = {"main": str(assets.resolve_model("org/tiny")), "branch": str(assets.resolve_model("org/tiny@v2")),
       "commit": str(assets.resolve_model("org/tiny", revision=sys.argv[1])),
       "name_or_path": weights.load("org/tiny@v2").config.name_or_path,
       "chat_template": tokenizer.load_tokenizer("org/tiny").chat_template is not None}
for name in ("org/missing", "org/tiny@v3"):
    try:
        assets.resolve_model(name)
    except assets.AssetError as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""


def test_hub_names_resolve_from_hf_home_offline(hf_home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, V2], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    snapshots = hf_home / "hub" / "models--org--tiny" / "snapshots"
    assert out["main"] == str(snapshots / MAIN)
    assert out["branch"] == out["commit"] == str(snapshots / V2)
    assert out["name_or_path"] == "org/tiny@v2"
    assert out["chat_template"]
    cache = str(hf_home / "hub")
    assert f"'org/missing' (revision main) is not in the Hugging Face cache {cache}" in out["org/missing"]
    assert "incomplete (lacks model.safetensors)" in out["org/tiny@v3"]


class NetworkUsed(Exception):
    pass


def test_a_cached_model_is_not_fetched_again(hf_home, monkeypatch):
    from huggingface_hub import HfApi, constants

    def refuse(*args, **kwargs):
        raise NetworkUsed("the hub was asked")

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    for method in ("repo_info", "list_repo_tree", "model_info"):
        monkeypatch.setattr(HfApi, method, refuse)
    assert assets.resolve_model("org/tiny") == hf_home / "hub" / "models--org--tiny" / "snapshots" / MAIN
    assert assets.resolve_model(f"org/tiny@{V2}").name == V2
    with pytest.raises(assets.AssetError, match=r"'org/tiny' \(revision v3\) is incomplete \(lacks model.safetensors\)"
                                                r" in the Hugging Face cache .*\(NetworkUsed: the hub was asked\)"):
        assets.resolve_model("org/tiny@v3")  # only an incomplete snapshot goes to the hub
    with pytest.raises(assets.AssetError, match="names revision 'v2', but revision='v3' was passed"):
        assets.resolve_model("org/tiny@v2", revision="v3")
    with pytest.raises(assets.AssetError, match="not a hub name like 'org/model'"):
        assets.resolve_model("no-such-folder")


def test_download_patterns_keep_the_tokenizer_and_chat_template_files():
    from huggingface_hub.utils import filter_repo_objects

    listing = ["config.json", "generation_config.json", "model-00001-of-00004.safetensors",
               "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "chat_template.jinja", "merges.txt", "vocab.json", "tokenizer.model", "original/tokenizer.model",
               "added_tokens.json", "original/consolidated.00.pth", "pytorch_model.bin", "model.Q4_K_M.gguf",
               "README.md", ".gitattributes", "LICENSE"]
    kept = set(filter_repo_objects(listing, allow_patterns=assets.HUB_PATTERNS))
    assert kept == {"config.json", "generation_config.json", "model-00001-of-00004.safetensors",
                    "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json", "chat_template.jinja", "merges.txt", "vocab.json", "tokenizer.model",
                    "original/tokenizer.model", "added_tokens.json"}
