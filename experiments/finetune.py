"""LoRA instruction tuning of the general LLM on a prepared data set; resumes from the latest checkpoint.

  python experiments/finetune.py --config configs/movielens.py --workdir /abs/workdir
  python experiments/finetune.py --config configs/quickstart.py --workdir /abs/w --config.finetune.max_steps=10
Multi-host: pass --coordinator=host:port --num_processes=N --process_id=i on every host.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs/ importable

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from rallrec_jax import locking, parallel, settings  # noqa: E402
from rallrec_jax.generation import finetune  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/*.py file", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder (made absolute)")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "jax.distributed coordinator address (multi-host)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "processes in a multi-host run")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index in a multi-host run")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    if _NUM_PROCESSES.value and _NUM_PROCESSES.value > 1:
        parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    workdir = os.path.abspath(_WORKDIR.value)
    import contextlib

    import jax

    # Process 0 holds the workdir's lock for a multi-host run.
    with locking.workdir_lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
        summary = finetune.finetune(_CONFIG.value, workdir)
    print(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    app.run(main, flags_parser=settings.parse_flags)
