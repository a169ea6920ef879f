"""The persistent XLA compilation cache: a program compiled once is loaded, not compiled, by every later process.

Why: each process (the pipeline, a stage binary, a rerun after a change to one stage, the next notebook
session) compiled every jitted program again, 1-2.5 CPU seconds per shape on 2 cores for SmolLM2 (scoring
buckets, the sampler's prefill and decode, the train step) and far more for an 8B model inside a short
accelerator lease. With the cache, the second process loads each program in a tenth of that or less
(`benchmarks/compile_times.py --persistent-cache` measures both in fresh processes).

Where: `$RALLREC_XLA_CACHE`, else a folder jax was already given (`JAX_COMPILATION_CACHE_DIR` or
`jax.config.jax_compilation_cache_dir`: a user's own cache is kept, not moved), else `<RALLREC_CACHE>/xla`
(`assets.cache_dir()`); `RALLREC_XLA_CACHE=off` turns it off. Every binary enables it at start (`cli.py`); a
notebook or service calls `enable()` itself.

Safety: jax keys an entry by the program, its compile options and shardings, the jax/jaxlib versions and the
backend, and writes it from process 0 only; XLA:CPU checks the host's CPU features when it loads an entry and
compiles afresh when they differ (so one home folder shared by different machines is safe); an unreadable
entry is a warning and a recompile, never a wrong program. Entries are small (about 50 KB per SmolLM2
program on CPU). To clear the cache, delete the folder.
"""
from __future__ import annotations

import logging
import os
import pathlib

ENV = "RALLREC_XLA_CACHE"
OFF = ("off", "0", "false", "none", "")
# Programs that compile faster than this are not written (jax's default, 1 s, would skip most CPU programs of a
# 135M model, which compile in 0.3-1 s each but add up to minutes over a pipeline's shapes).
MIN_COMPILE_SECONDS = 0.2


def cache_path() -> pathlib.Path | None:
    """The folder the cache lives in, or None when `RALLREC_XLA_CACHE` turns it off."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in OFF else pathlib.Path(value).expanduser().resolve()
    import jax

    # jax reads JAX_COMPILATION_CACHE_DIR into this option at import; a folder set either way is the user's choice.
    own = jax.config.jax_compilation_cache_dir
    if own:
        return pathlib.Path(own).expanduser().resolve()
    from rallrec_jax import assets

    return assets.cache_dir() / "xla"


def enable() -> pathlib.Path | None:
    """Points jax's persistent compilation cache at `cache_path()` (made if missing); returns it, or None when
    it is off. Call before the first compile; later calls with the same folder change nothing."""
    import jax

    path = cache_path()
    if path is None:
        logging.info("xla cache: off (%s)", ENV)
        return None
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    logging.info("xla cache: %s (%s=off turns it off)", path, ENV)
    return path
