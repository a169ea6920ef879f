"""The persistent XLA cache (rallrec_jax/xla_cache.py): where it lives, how it is turned off, and that a second
fresh process loads a program the first compiled instead of compiling it (jax's own cache-hit events)."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import pytest

from rallrec_jax import xla_cache

ROOT = pathlib.Path(__file__).resolve().parents[1]

# A fresh process: enables the cache as the binaries do, compiles one program (a scan of matmuls and sorts) and
# prints jax's cache events; the write threshold is set to 0 so a fast machine's compile is written too.
CHILD = r"""
import json, jax, jax.numpy as jnp
from jax._src import monitoring
from rallrec_jax import xla_cache
events = []
monitoring.register_event_listener(lambda name, **kw: events.append(name))
path = xla_cache.enable()
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # written however fast this machine compiles
def f(x):
    def body(h, w):
        return jnp.sort(jnp.tanh(h @ w), axis=-1), None
    return jax.lax.scan(body, x, jnp.stack([jnp.eye(64) * (i + 1) for i in range(8)]))[0].sum()
jax.jit(f).lower(jnp.ones((64, 64))).compile()
print(json.dumps({"path": str(path), "hits": events.count("/jax/compilation_cache/cache_hits"),
                  "misses": events.count("/jax/compilation_cache/cache_misses")}))
"""


def _run_child(env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300,
                          cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def no_jax_cache_dir():
    """This process's jax option cleared (an earlier test's binary may have enabled the cache), then restored."""
    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    yield
    jax.config.update("jax_compilation_cache_dir", before)


def test_the_folder_follows_the_environment(monkeypatch, tmp_path, no_jax_cache_dir):
    monkeypatch.delenv(xla_cache.ENV, raising=False)
    monkeypatch.setenv("RALLREC_CACHE", str(tmp_path / "cache"))
    assert xla_cache.cache_path() == (tmp_path / "cache").resolve() / "xla"
    monkeypatch.setenv(xla_cache.ENV, str(tmp_path / "elsewhere"))
    assert xla_cache.cache_path() == (tmp_path / "elsewhere").resolve()
    for off in ("off", "OFF", "0", "false", " "):
        monkeypatch.setenv(xla_cache.ENV, off)
        assert xla_cache.cache_path() is None


def test_a_folder_jax_was_given_is_kept_unless_ours_is_set(tmp_path):
    """A user's own JAX_COMPILATION_CACHE_DIR is where the cache stays; RALLREC_XLA_CACHE still wins over it."""
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(tmp_path / "users_own"),
               RALLREC_CACHE=str(tmp_path / "cache"))
    env.pop(xla_cache.ENV, None)
    env.pop("XLA_FLAGS", None)
    out = _run_child(env)
    assert out["path"] == str((tmp_path / "users_own").resolve())
    assert any((tmp_path / "users_own").iterdir()) and not (tmp_path / "cache" / "xla").exists()
    env[xla_cache.ENV] = str(tmp_path / "ours")
    assert _run_child(env)["path"] == str((tmp_path / "ours").resolve())


def test_a_second_process_loads_what_the_first_compiled(tmp_path):
    env = dict(os.environ, **{xla_cache.ENV: str(tmp_path / "xla")})
    env.pop("XLA_FLAGS", None)  # one CPU device, as a binary runs
    first = _run_child(env)
    assert first["path"] == str((tmp_path / "xla").resolve())
    assert first["hits"] == 0 and first["misses"] >= 1
    assert any((tmp_path / "xla").iterdir())  # the program was written
    second = _run_child(env)
    assert second["hits"] >= 1 and second["misses"] == 0


def test_off_writes_and_reads_nothing(tmp_path):
    env = dict(os.environ, **{xla_cache.ENV: "off", "RALLREC_CACHE": str(tmp_path / "cache")})
    env.pop("XLA_FLAGS", None)
    for _ in range(2):
        out = _run_child(env)
        assert out["path"] == "None" and out["hits"] == 0
    assert not (tmp_path / "cache" / "xla").exists()
