"""Click options derived from a run config's fields, so each setting's name, type, default and help live in one
place (the dataclass; conventions in rtoolkit.train.runconfig).

    @main.command("pretrain")
    @config_options(PretrainConfig, overrides={"data": {"type": EXISTING_DIR}})
    def pretrain_cmd(config: PretrainConfig) -> None: ...

A field `batch_size` becomes `--batch-size`; `bool` fields become flags (`--compile`, or `--progress/--no-progress`
when the default is True), `Literal` fields choices, `Path` fields paths, `tuple[X, ...]` repeatable options, and
`tuple[X, Y]` options taking two values. A field's docstring is its help; a non-None default is shown. `overrides`
changes what a command needs differently (other flag names, path checks, or a whole replacement option); `skip`
leaves fields out (they keep their defaults). Errors a config raises name fields (`batch_size must be >= 1`); the
command shows them as its flags (`--batch-size must be >= 1`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from rtoolkit.config import ConfigError
from rtoolkit.train.runconfig import choices_of, field_docs

EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _click_type(annotation: Any) -> Any:
    if (choices := choices_of(annotation)) is not None:
        return click.Choice([str(c) for c in choices])
    if annotation is Path:
        return click.Path(path_type=Path)
    return annotation


def field_option(config_cls: type, name: str, **override: Any) -> Callable:
    """The click option of one field of `config_cls` (`override`: click.option keywords; "names" replaces the flag
    names, "param" the parameter name the command receives)."""
    fld = {f.name: f for f in dataclasses.fields(config_cls)}[name]
    annotation = _strip_optional(typing.get_type_hints(config_cls)[name])
    default: Any = fld.default
    if default is dataclasses.MISSING and fld.default_factory is not dataclasses.MISSING:
        default = fld.default_factory()
    flag = "--" + name.replace("_", "-")
    kwargs: dict[str, Any] = {"help": field_docs(config_cls).get(name, "")}
    if default is dataclasses.MISSING:
        kwargs["required"] = True
    elif annotation is bool:
        if default:
            flag = f"{flag}/--no-{name.replace('_', '-')}"
            kwargs["show_default"] = True
        else:
            kwargs["is_flag"] = True
        kwargs["default"] = default
    else:
        kwargs["default"] = default
        kwargs["show_default"] = default is not None and default != ()
    origin = typing.get_origin(annotation)
    if annotation is not bool:
        if origin is tuple and typing.get_args(annotation)[-1] is Ellipsis:
            kwargs.update(multiple=True, type=_click_type(typing.get_args(annotation)[0]))
        elif origin is tuple:
            kwargs["type"] = tuple(_click_type(a) for a in typing.get_args(annotation))
        else:
            kwargs["type"] = _click_type(annotation)
    names = override.pop("names", [flag])
    param = override.pop("param", name)
    kwargs.update(override)
    return click.option(*names, param, **kwargs)


def config_options(
    config_cls: type, *, overrides: dict[str, dict[str, Any]] | None = None, skip: tuple[str, ...] = ()
) -> Callable:
    """Decorate a click command with an option per field of `config_cls`; the command is called with the built
    config as `config` (and its other parameters as before)."""
    overrides = overrides or {}
    names = [
        f.name
        for f in dataclasses.fields(config_cls)
        if f.init and f.name not in skip and typing.get_origin(typing.get_type_hints(config_cls)[f.name]) is not dict
        and typing.get_type_hints(config_cls)[f.name] is not dict
    ]  # fmt: skip
    flags = {}
    for name in names:
        given = overrides.get(name, {}).get("names")
        flags[name] = (given[0] if given else "--" + name.replace("_", "-")).split("/")[0]

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            try:
                return func(config=config_cls(**values), **kwargs)
            except ConfigError as exc:
                raise ConfigError(in_flags(exc, flags)) from exc

        docs = field_docs(config_cls)
        for name in reversed(names):
            override = dict(overrides.get(name, {}))
            override.setdefault("help", _in_flags(docs.get(name, ""), [n for n in names if "_" in n], flags))
            command = field_option(config_cls, name, **override)(command)
        return command

    return decorate


def in_flags(error: ConfigError, flags: dict[str, str]) -> str:
    """The error's message with the fields it names written as the command's flags."""
    return _in_flags(str(error), error.fields, flags)


def _in_flags(text: str, names: Any, flags: dict[str, str]) -> str:
    for name in names:
        if name in flags:
            text = re.sub(rf"(?<![\w-]){re.escape(name)}(?!\w)", flags[name], text)
    return text
