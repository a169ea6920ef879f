"""The command-line mains (absl): the console scripts of pyproject.toml (`rallrec-pipeline`,
`rallrec-prepare-data`, ...) and `python experiments/<name>.py`, thin wrappers that call these.

Every main takes `--config` (a configs/*.py file, `--config.<field>=value` overrides) and `--workdir` (made
absolute), and sets up the console (rallrec_jax/console.py): library logging into `<workdir>/logs/`, the
terminal for stage lines, progress bars (`--noprogress` hides them), results and warnings
(`--log_to_console` adds the INFO lines). Flags are defined when a main runs, so each binary lists only its own.
Config files import `from configs import ...`: the `configs` package ships with the distribution, and a source
checkout's root is put on the path by the experiments/ wrappers.

Every binary loads the programs earlier runs compiled from the persistent XLA cache (`rallrec_jax/xla_cache.py`;
`RALLREC_XLA_CACHE=off` turns it off).

Multi-host (every binary with --config): `--coordinator=host:port --num_processes=N --process_id=i` on every
host, or `--distributed=auto` where `jax.distributed.initialize()` finds the cluster itself (TPU pods, SLURM).
Then process 0 holds the workdir's lock and writes the files; the others compute beside it and wait for them
(the workdir must be one shared folder). Each process logs to `<workdir>/logs/<binary>-p<i>-*.log`.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags

from rallrec_jax import console, locking, settings, xla_cache

# Without torch (the default install) transformers advises at import that its PyTorch models are unavailable;
# none is used here, so that line would only mislead on the terminal.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


class _Common:
    """The flags every stage binary has."""

    def __init__(self, with_config: bool = True):
        from ml_collections import config_flags

        self.config = (config_flags.DEFINE_config_file("config", None, "configs/*.py file", lock_config=True)
                       if with_config else None)
        self.workdir = flags.DEFINE_string("workdir", None, "output folder (made absolute)") if with_config else None
        self.log_to_console = flags.DEFINE_bool(
            "log_to_console", False, "also show library INFO logging on the terminal (it always goes to "
            "<workdir>/logs/)")
        self.progress = flags.DEFINE_bool("progress", True, "progress bars for the long loops (tqdm on stderr)")
        if with_config:
            flags.mark_flags_as_required(["config", "workdir"])
        self.distributed = _Distributed() if with_config else None

    def start(self, name: str, workdir: str | None = None) -> str:
        """Absolute workdir, with this process joined to its multi-host run (if any) and the console set up
        for the binary `name`."""
        workdir = os.path.abspath(workdir or self.workdir.value)
        if self.distributed is not None:
            name = self.distributed.join(name)
        console.setup(workdir, name, log_to_console=self.log_to_console.value, progress=self.progress.value)
        xla_cache.enable()  # programs compiled by an earlier run are loaded, not compiled again
        return workdir



class _Distributed:
    """The multi-host flags, one definition for every binary (module docstring)."""

    def __init__(self):
        from rallrec_jax import parallel

        self.mode = flags.DEFINE_enum("distributed", "", list(parallel.DISTRIBUTED_MODES),
                                      "'auto': jax.distributed.initialize() detects the cluster (TPU pods, SLURM); "
                                      "empty: explicit --coordinator/--num_processes/--process_id, or one process")
        self.coordinator = flags.DEFINE_string("coordinator", None, "jax.distributed coordinator address host:port "
                                               "(multi-host)")
        self.num_processes = flags.DEFINE_integer("num_processes", None, "processes in a multi-host run")
        self.process_id = flags.DEFINE_integer("process_id", None, "this process's index in a multi-host run")

    def join(self, name: str) -> str:
        """Joins the run the flags name (nothing for one process); returns `name` with this process's index when
        there are several."""
        from rallrec_jax import parallel

        try:
            kwargs = parallel.distributed_arguments(self.mode.value, self.coordinator.value, self.num_processes.value,
                                                    self.process_id.value)
        except ValueError as exc:
            raise app.UsageError(str(exc)) from exc
        if kwargs is None:
            return name
        parallel.initialize_distributed(kwargs["coordinator_address"], kwargs["num_processes"], kwargs["process_id"])
        import jax

        return f"{name}-p{jax.process_index()}" if jax.process_count() > 1 else name


def print_json(summary: Any) -> None:
    print(json.dumps(summary, indent=1, default=str), flush=True)


def _run(main: Callable[[Sequence[str]], None], argv: Sequence[str] | None) -> None:
    # settings.parse_flags: a bad `--config.<field>=` override or an out-of-range value is one line naming the
    # field and the fix (exit 2), not absl's chained tracebacks.
    app.run(main, argv=None if argv is None else list(argv), flags_parser=settings.parse_flags)


def stage_main(name: str, fn: Callable[[Any, str], None], argv: Sequence[str] | None = None) -> None:
    """A binary that is `--config` + `--workdir` and one library call fn(config, workdir)."""
    common = _Common()

    def main(argv):
        del argv
        workdir = common.start(name)
        with locking.writer_lock(workdir):  # one run per workdir
            fn(common.config.value, workdir)

    _run(main, argv)


# ----------------------------------------------------------------------------- the binaries


def pipeline(argv: Sequence[str] | None = None) -> None:
    """`rallrec-pipeline`: every stage from one config, resumable, ending with the paper's tables."""
    from rallrec_jax import pipeline as pipeline_lib

    common = _Common()
    stages = flags.DEFINE_list("stages", None, f"subset of {','.join(pipeline_lib.STAGES)} (default: all)")

    def main(argv):
        del argv
        workdir = common.start("pipeline")
        pipeline_lib.run_pipeline(common.config.value, workdir, stages.value, progress=console.say)

    _run(main, argv)


def prepare_data(argv: Sequence[str] | None = None) -> None:
    """`rallrec-prepare-data`: a data set's CTR samples under --workdir, and their statistics."""
    common = _Common()
    force = flags.DEFINE_bool("force", False, "prepare again even if the outputs are up to date")

    def main(argv):
        del argv
        from rallrec_jax.data import ctr, prepare

        workdir = common.start("prepare_data")
        with locking.writer_lock(workdir):
            data = prepare.prepare_data(common.config.value.data, workdir, force=force.value)
        print(ctr.format_statistics(data.statistics()))
        print(f"prepared: {prepare.prepared_dir(common.config.value.data, workdir)}")

    _run(main, argv)


def _retrieval_step(step: str) -> Callable[[Any, str], None]:
    def fn(config, workdir):
        from rallrec_jax.retrieval import stage

        print_json(stage.run_step(config, workdir, step))

    return fn


def train_lightgcn(argv: Sequence[str] | None = None) -> None:
    """`rallrec-train-lightgcn`: LightGCN on the training graph, Recall@20/NDCG@20 against popularity."""
    stage_main("train_lightgcn", _retrieval_step("lightgcn"), argv)


def train_ssl(argv: Sequence[str] | None = None) -> None:
    """`rallrec-train-ssl`: the text embeddings aligned to LightGCN's space (symmetric InfoNCE)."""
    stage_main("train_ssl", _retrieval_step("ssl"), argv)


def retrieve(argv: Sequence[str] | None = None) -> None:
    """`rallrec-retrieve`: the evaluated test rows' histories ordered (top-K retrieval, reranker)."""
    stage_main("retrieve", _retrieval_step("retrieve"), argv)


def finetune(argv: Sequence[str] | None = None) -> None:
    """`rallrec-finetune`: LoRA instruction tuning of the general LLM; resumes from the latest checkpoint."""

    def fn(config, workdir):
        from rallrec_jax.generation import finetune as finetune_lib

        print_json(finetune_lib.finetune(config, workdir))

    stage_main("finetune", fn, argv)


def evaluate(argv: Sequence[str] | None = None) -> None:
    """`rallrec-evaluate`: P(Yes) of the general LLM over a split and its AUC / LogLoss / ACC."""
    common = _Common()
    adapters = flags.DEFINE_string("adapters", None, "'' zero-shot, 'best' (the finetune run's), or a folder; "
                                   "default config.evaluate.adapters")
    rows = flags.DEFINE_integer("rows", None, "the split's first N rows (0 = all); default: the config's evaluation "
                                "sample, config.eval_size rows drawn as config.eval_sample (user-stratified)")

    def main(argv):
        del argv
        from rallrec_jax.generation import evaluate as evaluate_lib

        workdir = common.start("evaluate")
        with locking.writer_lock(workdir):
            result = evaluate_lib.evaluate(common.config.value, workdir, adapters.value, num_rows=rows.value)
        print_json({k: v for k, v in result.items() if k not in ("probabilities", "labels")})

    _run(main, argv)


def reason(argv: Sequence[str] | None = None) -> None:
    """`rallrec-reason`: P_G, then K reasoning traces per test row and their P(Yes); resumable."""

    def fn(config, workdir):
        from rallrec_jax.reasoning import stage

        print_json(stage.reason(config, workdir))

    stage_main("reason", fn, argv)


def merge(argv: Sequence[str] | None = None) -> None:
    """`rallrec-merge`: the consistency merger (eq. 10), the results table, the sweeps and the figures."""

    def fn(config, workdir):
        from rallrec_jax.reasoning import stage

        result = stage.merge_results(config, workdir)
        print(stage.results_table(result["rows"]))
        print(f"figures: {sorted(result['figures'].values())}")

    stage_main("merge", fn, argv)


def figure8(argv: Sequence[str] | None = None) -> None:
    """`rallrec-figure8`: Fig. 8 from one or two pipeline workdirs (one per tuning set)."""
    common = _Common(with_config=False)
    workdirs = flags.DEFINE_list("workdirs", None, "one or two pipeline workdirs (one per tuning set)")
    out = flags.DEFINE_string("out", None, "PNG path (JSON beside it); default <first workdir>/report/figure8_all.png")
    flags.mark_flags_as_required(["workdirs"])

    def main(argv):
        del argv
        from rallrec_jax import report as report_lib

        folders = [os.path.abspath(w) for w in workdirs.value]
        common.start("figure8", folders[0])
        print_json(report_lib.figure8(folders, os.path.abspath(out.value) if out.value else None))

    _run(main, argv)


COMMANDS = {"rallrec-pipeline": pipeline, "rallrec-prepare-data": prepare_data,
            "rallrec-train-lightgcn": train_lightgcn, "rallrec-train-ssl": train_ssl, "rallrec-retrieve": retrieve,
            "rallrec-finetune": finetune, "rallrec-evaluate": evaluate, "rallrec-reason": reason,
            "rallrec-merge": merge, "rallrec-figure8": figure8}


if __name__ == "__main__":  # python -m rallrec_jax.cli <command> [flags]
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: python -m rallrec_jax.cli {{{','.join(COMMANDS)}}} [flags]")
    COMMANDS[sys.argv[1]]([sys.argv[0]] + sys.argv[2:])
