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
    values = dict(config) if isinstance(config, Mapping) else dict(config.items())
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {label} config fields {unknown}; known: {sorted(known)}")
    return cls(**values)
