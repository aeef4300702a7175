"""What the run configs (`PretrainConfig`, `FinetuneConfig`) have in common: how a setting is documented, checked,
recorded, kept across --resume, and how a run is seeded.

- Every field is documented by the docstring right below it; `field_docs` reads them, so `rtoolkit pretrain --help`
  shows the same words (the CLI builds its options from the fields: rtoolkit.cli.config_options). A field whose
  default is None is resolved per run; its docstring ends with a "Default: ..." sentence saying to what.
- Paths are `Path`; choices are `Literal` types (the CLI offers exactly those values).
- `validate` raises `ConfigError` naming settings by their field names (`batch_size must be >= 1`), and lists them
  in `fields`; the CLI shows them as flags (`--batch-size must be >= 1`).
- `run_config.json` records every setting (`to_dict`); `--resume` refuses settings listed in the config's
  `RESUME_INVARIANTS` that differ from the recorded ones (`check_resume_settings`).
- Seeding: `seed` alone decides the model's initialisation (same on every process) and the data order; after the
  model is built, `seed + rank` seeds dropout, which therefore differs between processes (`seed_dropout`).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import typing
from pathlib import Path
from typing import Any, Literal

import torch

from rtoolkit.config import ConfigError

__all__ = [
    "ConfigError",
    "check_choices",
    "check_minimum",
    "check_resume_or_overwrite",
    "check_resume_settings",
    "choices_of",
    "field_docs",
    "seed_dropout",
    "seed_init",
    "to_dict",
]


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """{field name: its docstring, as one line} for a dataclass whose fields are documented by a string literal
    right below them."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def choices_of(annotation: Any) -> tuple[Any, ...] | None:
    """The values a `Literal[...]` (or `Literal[...] | None`) annotation allows; None for any other type."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is Literal:
            return typing.get_args(arg)
    return None


def check_choices(config: Any) -> None:
    """Every `Literal` field holds one of its values (None passes where the annotation allows it)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        choices = choices_of(hints[f.name])
        value = getattr(config, f.name)
        if (
            choices is not None
            and value not in choices
            and not (value is None and type(None) in _union(hints[f.name]))
        ):
            shown = " | ".join(str(c) for c in choices)
            raise ConfigError(f"{f.name} must be one of {shown}, got {value!r}", fields=(f.name,))


def _union(annotation: Any) -> tuple[Any, ...]:
    return typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, _UnionType) else ()


_UnionType = type(int | None)


def check_resume_or_overwrite(config: Any) -> None:
    """`resume` and `overwrite` exclude each other (the message names their flags too: it is met from the CLI)."""
    if config.resume and config.overwrite:
        raise ConfigError(
            "resume and overwrite (--resume, --overwrite) exclude each other: resume continues the run in out, "
            "overwrite starts it again; choose one"
        )


def check_minimum(
    config: Any, names: tuple[str, ...], minimum: float, zero_means: dict[str, str] | None = None
):
    """Each of `names` (None passes) is at least `minimum`; `zero_means` says in the message what 0 does."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < minimum:
            note = f" (0: {zero_means[name]})" if zero_means and name in zero_means else ""
            raise ConfigError(f"{name} must be >= {minimum}{note}, got {value}", fields=(name,))


def to_dict(config: Any) -> dict[str, Any]:
    """Every setting, JSON-ready (paths as strings, tuples as lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def check_resume_settings(run_config: Path, settings: dict[str, Any], invariants: tuple[str, ...]) -> None:
    """Refuse to resume with any of `invariants` set otherwise than recorded in `run_config` (a missing record, or a
    setting it does not hold, passes)."""
    if not run_config.is_file():
        return
    try:
        old = json.loads(run_config.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{run_config} is not valid JSON ({exc.msg}); cannot check the resumed settings"
        ) from None
    changed = [k for k in invariants if k in old and old[k] != settings[k]]
    if changed:
        details = ", ".join(f"{k}: {old[k]!r} -> {settings[k]!r}" for k in changed)
        raise ConfigError(
            f"resume with settings that differ from {run_config} ({details}); keep them as they were",
            fields=("resume", *changed),
        )


def seed_init(seed: int) -> None:
    """Seed what must agree on every process: the model's initialisation (call right before building it)."""
    torch.manual_seed(seed)


def seed_dropout(seed: int, rank: int) -> None:
    """Seed dropout once the model is built: `seed + rank`, so processes drop different units."""
    torch.manual_seed(seed + rank)
