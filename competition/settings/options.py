"""A command's typer options, made from its settings model.

Each setting becomes one option: the flag from its name (or its declared flags), its type,
default and choices from its annotation (typer lists the choices and completes them), its
help from its declaration. Lists of numbers are typed as `1,0.5`; repeatable settings take
the flag once per value. The command body receives only the settings the user typed, so
defaults never override a config file or a resumed run.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from pydantic.fields import FieldInfo

from competition.errors import CompeteError
from competition.settings.base import Settings, flag_of


@dataclass
class Option:
    """One setting as a command-line option: the parameter typer sees and how its value becomes the setting's."""

    setting: str
    parameter: inspect.Parameter
    convert: Callable[[Any], Any]
    old_flag: str = ""  # an old spelling: the value goes to `setting`, with a note


def _floats(flag: str) -> Callable[[str], list[float] | None]:
    def parse(text: str) -> list[float] | None:
        try:
            values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise CompeteError(f"{flag} must be numbers separated by commas, not '{text}'") from None
        return values or None

    return parse


def _same(value: Any) -> Any:
    return value


def _cli_type(annotation: Any, default: Any, flag: str) -> tuple[Any, Any, Callable[[Any], Any]]:
    """(typer annotation, typer default, value -> setting) for a setting's annotation."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal and "" in args:  # "" = unset: an optional choice
        return Optional[Literal[tuple(a for a in args if a)]], None, lambda v: v or ""
    if annotation in (list[float], Optional[list[float]]):
        return str, ",".join(f"{v:g}" for v in default or []), _floats(flag)
    if annotation == list[str]:
        return Optional[list[str]], None, list
    if set(args) == {bool, Literal["auto"]}:  # a bool pair, unset = auto
        return Optional[bool], None, _same
    return annotation, default, _same


def _parameter(name: str, annotation: Any, default: Any, info: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[annotation, info]
    )


def _shown_default(field: FieldInfo, cli_default: Any) -> str | bool:
    """What `--help` shows as the default: the declared text, the setting's own list, or the value."""
    declared = (field.json_schema_extra or {}).get("show_default")
    if declared is not None:
        return declared
    if cli_default is not None:
        return True  # typer shows the value itself
    if isinstance(field.default, list):  # a repeated flag or a comma list: the setting's own values
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in field.default)
    return str(field.default) if field.default not in ("", None) else False


def _options_of(name: str, field: FieldInfo, panel: str | None) -> list[Option]:
    """The option of one setting, and a hidden one per old spelling."""
    extra = field.json_schema_extra or {}
    flags = extra.get("flags") or [flag_of(name)]
    long_flag = next(f for f in flags if f.startswith("--")).split("/")[0]
    annotation, default, convert = _cli_type(field.annotation, field.default, long_flag)
    if extra.get("many"):
        annotation, default, convert = Optional[list[annotation]], None, list
    if extra.get("path"):  # typed as a path so the shell completes it; the setting keeps text
        annotation, default = Optional[Path], Path(default) if default else None
    if annotation is bool:  # a switch and its negation, unless the declaration names the pair
        flags = [f"{f}/--no-{f[2:]}" if f.startswith("--") and "/" not in f else f for f in flags]
    info = typer.Option(
        *flags, help=field.description, show_default=_shown_default(field, default), rich_help_panel=panel
    )
    options = [Option(name, _parameter(name, annotation, default, info), convert)]
    for old in extra.get("old_flags", []):
        hidden = _parameter(
            f"old_{old[2:].replace('-', '_')}_{name}", annotation, default, typer.Option(old, hidden=True)
        )
        options.append(Option(name, hidden, convert, old))
    return options


def options_of(model: type[Settings], panel: str | None = None) -> list[Option]:
    """Every setting of `model` (a nested model's flat, in a help panel of their own)."""
    options = []
    nested = model.nested()
    for name, field in model.model_fields.items():
        if name in nested:
            options += options_of(nested[name], nested[name].PANEL)
        else:
            options += _options_of(name, field, panel)
    return options


def typed(ctx: typer.Context) -> set[str]:
    """The parameters the user typed: defaults must not override a config file or a resumed run."""
    # compared by name: typer vendors its own click, whose ParameterSource is another class
    return {
        name
        for name in ctx.params
        if getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE", "ENVIRONMENT")
    }


def typed_settings(ctx: typer.Context, options: list[Option], note: Callable[[str], None]) -> dict:
    """{setting: value} of the options the user typed, converted; an old spelling gets a note."""
    given = typed(ctx)
    settings = {}
    for option in options:
        if option.parameter.name in given:
            if option.old_flag:
                note(f"note: {option.old_flag} is deprecated, use {flag_of(option.setting)}")
            value = ctx.params[option.parameter.name]
            settings[option.setting] = option.convert(str(value) if isinstance(value, Path) else value)
    return settings


def settings_command(app: typer.Typer, model: type[Settings], note: Callable[[str], None], **command: Any) -> Callable:
    """Register `body(settings, **own)` as a command whose options are `model`'s settings after
    the body's own parameters; `settings` holds the typed ones (run it inside the error guard:
    a malformed `--scales` raises CompeteError)."""

    def register(body: Callable) -> Callable:
        own = list(inspect.signature(body, eval_str=True).parameters.values())[1:]
        options = options_of(model)

        def run(ctx: typer.Context, **values: Any) -> Any:
            return body(lambda: typed_settings(ctx, options, note), **{p.name: values[p.name] for p in own})

        context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        run.__signature__ = inspect.Signature([context, *own, *(o.parameter for o in options)])
        run.__doc__, run.__name__ = body.__doc__, body.__name__
        app.command(**command)(run)
        return body

    return register
