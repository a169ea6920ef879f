"""Typed settings from the configs: a frozen dataclass built from a ConfigDict, a plain mapping, or itself.

One place for the rule every stage's settings follow: a field the dataclass does not know is an error
that names it (a typo in a `--config.*` override must not be silently ignored)."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def from_config(cls: type[T], config: Any, label: str) -> T:
    """`cls` from None (defaults), an instance (returned as is), a Mapping or a ConfigDict-like object."""
    if config is None:
        return cls()
    if isinstance(config, cls):
        return config
    values = config_values(config)
    check_known(values, field_names(cls), label)
    return cls(**values)


def config_values(config: Any) -> dict[str, Any]:
    """The top-level fields of a Mapping or a ConfigDict-like object, as a dict (None: no fields)."""
    if config is None:
        return {}
    return dict(config) if isinstance(config, Mapping) else dict(config.items())


def field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def check_known(values: Mapping[str, Any], known: set[str], label: str) -> None:
    """A field the settings do not know is an error naming it and every field they do know."""
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {label} config fields {unknown}; known: {sorted(known)}")


# ----------------------------------------------------------------------------- whole-config checks
# (dotted field, smallest allowed value): the sizes and counts a run divides by or loops over. A value out of
# range otherwise fails deep inside a stage, minutes later, with a message about arrays.
MINIMUMS: tuple[tuple[str, float], ...] = (
    ("eval_size", 0),
    ("evaluate.batch_size", 1), ("evaluate.k_history", 0), ("evaluate.max_prompt_tokens", 0),
    ("evaluate.min_bucket", 1),
    ("finetune.effective_batch", 1), ("finetune.micro_batch", 1), ("finetune.eval_batch", 1),
    ("finetune.epochs", 0), ("finetune.max_steps", 0), ("finetune.eval_size", 0), ("finetune.eval_every", 0),
    ("finetune.sample_size", 0), ("finetune.train_size", 0), ("finetune.k_history", 0),
    ("finetune.max_prompt_tokens", 0), ("finetune.patience", 0), ("finetune.checkpoint_every", 0),
    ("finetune.min_bucket", 1),
    ("lora.rank", 1),
    ("retrieval.k_history", 0), ("retrieval.embed_batch_size", 1), ("retrieval.description_batch_size", 1),
    ("retrieval.description_max_new_tokens", 1),
    ("reasoning.num_rows", 0), ("reasoning.num_traces", 1), ("reasoning.max_new_tokens", 1),
    ("reasoning.prompts_per_batch", 1), ("reasoning.score_batch", 1), ("reasoning.max_prompt_tokens", 0),
    ("deepfm.batch_size", 1),
)
POSITIVE = ("finetune.learning_rate", "lora.alpha")


def _lookup(config: Any, dotted: str) -> tuple[bool, Any]:
    node = config
    for part in dotted.split("."):
        try:
            if part not in node:
                return False, None
            node = node[part]
        except TypeError:
            return False, None
    return True, node


def check_config(config: Any) -> None:
    """Every size and count of a run config in range (`MINIMUMS`, `POSITIVE`), checked before any stage runs;
    the error names the field, its value and the override that fixes it."""
    if config is None:
        return
    problems = []
    for dotted, minimum in MINIMUMS:
        found, value = _lookup(config, dotted)
        if found and isinstance(value, (int, float)) and not isinstance(value, bool) and value < minimum:
            problems.append(f"{dotted}={value} must be >= {minimum:g}")
    for dotted in POSITIVE:
        found, value = _lookup(config, dotted)
        if found and isinstance(value, (int, float)) and not value > 0:
            problems.append(f"{dotted}={value} must be > 0")
    found, dropout = _lookup(config, "lora.dropout")
    if found and not 0 <= dropout < 1:
        problems.append(f"lora.dropout={dropout} must be in [0, 1)")
    if problems:
        raise ValueError("config out of range: " + "; ".join(problems)
                         + " (set it in the config file or with --config.<field>=<value>)")


def override_error(argv: list[str], config: Any, exc: BaseException) -> str:
    """One line for a `--config.<path>=<value>` naming a field the config lacks: which override, which field,
    the fields it could have meant."""
    import difflib

    for arg in argv:
        if not arg.startswith("--config."):
            continue
        path = arg[len("--config."):].split("=", 1)[0]
        parts = path.split(".")
        node, seen = config, []
        for part in parts:
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if part not in keys:
                where = ".".join(seen) or "the config"
                close = difflib.get_close_matches(part, keys, n=3)
                hint = f" Did you mean {', '.join(repr('.'.join(seen + [c])) for c in close)}?" if close else ""
                known = f" Fields of {where}: {', '.join(sorted(map(str, keys)))}." if keys else ""
                return (f"{arg}: the config has no field {path!r} ({where} has no {part!r}).{hint}{known} Fix the "
                        "spelling, or add the field to the config file.")
            node, seen = node[part], seen + [part]
    return f"a --config override names a field the config lacks: {exc}"


def _config_file(argv: list[str]) -> Any:
    """The config that `--config <file>` names, loaded alone (the flag fails before it keeps its value)."""
    from absl import flags

    if "config" not in flags.FLAGS:
        return None
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            value = argv[i + 1]
        else:
            continue
        try:
            return flags.FLAGS["config"].parser.parse(value)
        except Exception:  # the file itself is the problem: absl's message is the better one
            return None
    return None


def parse_flags(argv: list[str]) -> list[str]:
    """The binaries' absl flag parser (`app.run(main, flags_parser=settings.parse_flags)`): absl's own errors
    as absl prints them, an override of a field the config lacks and a config value out of range as one line
    each (exit status 2), never a chain of tracebacks."""
    import sys

    from absl import flags

    try:
        rest = flags.FLAGS(argv)
    except flags.Error as exc:
        sys.stderr.write(f"FATAL Flags parsing error: {exc}\nPass --helpshort or --helpfull to see help on flags.\n")
        sys.exit(1)
    except (AttributeError, KeyError) as exc:  # ml_collections: an override of a field the config lacks
        config = _config_file(argv)
        sys.stderr.write(f"error: {override_error(argv, config, exc) if config is not None else exc}\n")
        sys.exit(2)
    config = flags.FLAGS["config"].value if "config" in flags.FLAGS else None
    try:
        check_config(config)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
    return rest
