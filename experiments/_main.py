"""The shared absl main of stage binaries written as `run(fn)` with fn(config, workdir): now
`rallrec_jax.cli.stage_main`, kept here for wrappers that still import it."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout: configs/ importable

from rallrec_jax.cli import print_json, stage_main  # noqa: E402,F401


def run(fn) -> None:
    stage_main(os.path.splitext(os.path.basename(sys.argv[0]))[0], fn)
