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
    instead: str = ""  # what the note says to type now (the setting's flag when empty)


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
        return Optional[list[str]], list(default) or None, list
    if set(args) == {bool, Literal["auto"]}:  # a bool pair, unset = auto
        return Optional[bool], None, _same
    return annotation, default, _same


METAVARS = {int: "N", float: "X", str: "TEXT"}


def _metavar(annotation: Any, extra: dict) -> str | None:
    """What `--help` shows for the value: FILE, DIR, N, X, A,B; nothing for a switch; None lets typer
    list a choice's values."""
    if extra.get("metavar") or extra.get("path"):
        return extra.get("metavar") or extra["path"].upper()
    if annotation in (list[float], Optional[list[float]]):
        return "A,B"
    if bool in (annotation, *typing.get_args(annotation)):
        return ""
    return METAVARS.get(annotation)


def _parameter(name: str, annotation: Any, default: Any, info: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[annotation, info]
    )


def _help_and_default(field: FieldInfo, cli_default: Any) -> tuple[str, bool]:
    """The help line, and whether typer adds the default to it: a declared default text is said
    in the help (typer would print it in parentheses), an unset one not at all."""
    declared = (field.json_schema_extra or {}).get("show_default")
    if isinstance(declared, str):
        return f"{field.description} Default: {declared}.", False
    if declared is not None:
        return field.description, declared
    if cli_default is not None:
        return field.description, True  # typer shows the value itself
    return field.description, False


def _options_of(name: str, field: FieldInfo, panel: str | None, completions: dict[str, Callable]) -> list[Option]:
    """The option of one setting, and a hidden one per old spelling or alias."""
    extra = field.json_schema_extra or {}
    flags = extra.get("flags") or [flag_of(name)]
    long_flag = next((f for f in flags if f.startswith("--")), flags[0]).split("/")[0]
    annotation, default, convert = _cli_type(field.annotation, field.default, long_flag)
    if extra.get("many"):
        annotation, default, convert = Optional[list[annotation]], [default], list
    if extra.get("path"):  # typed as a path so the shell completes it; the setting keeps text
        annotation, default = Optional[Path], Path(default) if default else None
    if annotation is bool:  # a switch and its negation, unless the declaration names the pair
        flags = [f"{f}/--no-{f[2:]}" if f.startswith("--") and "/" not in f else f for f in flags]
    help_text, show_default = _help_and_default(field, default)
    info = typer.Option(
        *flags,
        help=help_text,
        show_default=show_default,
        rich_help_panel=panel,
        metavar=_metavar(field.annotation, extra),
        autocompletion=completions.get(extra.get("complete", "")),
    )
    options = [Option(name, _parameter(name, annotation, default, info), convert)]
    for spelling in extra.get("old_flags", []) + extra.get("aliases", []):
        hidden = _parameter(
            f"old_{spelling[2:].replace('-', '_')}_{name}", annotation, default, typer.Option(spelling, hidden=True)
        )
        options.append(Option(name, hidden, convert, spelling if spelling in extra.get("old_flags", []) else ""))
    for spelling, meant in extra.get("old_switches", {}).items():  # on: the value it means now; off: the default
        hidden = _parameter(
            f"old_{spelling[2:].replace('-', '_')}_{name}",
            bool,
            False,
            typer.Option(f"{spelling}/--no-{spelling[2:]}", hidden=True),
        )
        convert = lambda on, meant=meant: meant if on else field.default  # noqa: E731
        options.append(Option(name, hidden, convert, spelling, f"{flag_of(name)} {meant}"))
    return options


def options_of(
    model: type[Settings], panel: str | None = None, completions: dict[str, Callable] | None = None
) -> list[Option]:
    """Every setting of `model` in its `--help` panel, panel by panel (a nested model's flat, in a
    panel of their own); `completions`: what the shell completes a setting's `complete` name with."""
    completions = completions or {}
    nested = model.nested()
    panels = {name: title for title, names in model.PANELS.items() for name in names}
    order = list(model.PANELS) + [nested[name].PANEL for name in nested]
    options, own = [], {name: field for name, field in model.shown().items() if name not in nested}
    own_old = {flag for name, field in own.items() for flag in (field.json_schema_extra or {}).get("old_flags", [])}
    for name, field in model.shown().items():
        if name in nested:  # an old spelling the command's own settings also had stays theirs (submit's --weights)
            inner = options_of(nested[name], nested[name].PANEL, completions)
            options += [option for option in inner if option.old_flag not in own_old]
        else:
            options += _options_of(name, field, panels.get(name, panel), completions)
    return sorted(options, key=lambda option: _place(option, order, model.PANELS))


def _place(option: Option, order: list, panels: dict[str, tuple[str, ...]]) -> tuple[int, int]:
    """(its panel's place, its place in the panel's list): a nested model's options, listed by no
    panel, keep the order they are declared in (the sort is stable)."""
    panel = _panel_of(option)
    listed = panels.get(panel, ())
    return (
        order.index(panel) if panel in order else len(order),
        listed.index(option.setting) if option.setting in listed else len(listed),
    )


def _panel_of(option: Option) -> str | None:
    return typing.get_args(option.parameter.annotation)[1].rich_help_panel


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
                note(f"note: {option.old_flag} is deprecated, use {option.instead or flag_of(option.setting)}")
            if option.setting in settings:  # two spellings of one setting: which was meant is unknown
                raise CompeteError(f"{flag_of(option.setting)} is given twice, in two of its spellings: give it once")
            value = ctx.params[option.parameter.name]
            settings[option.setting] = option.convert(str(value) if isinstance(value, Path) else value)
    return settings


def settings_command(
    app: typer.Typer,
    model: type[Settings],
    note: Callable[[str], None],
    completions: dict[str, Callable] | None = None,
    **command: Any,
) -> Callable:
    """Register `body(settings, **own)` as a command whose options are `model`'s settings after
    the body's own parameters; `settings` holds the typed ones (run it inside the error guard:
    a malformed `--scales` raises CompeteError)."""

    def register(body: Callable) -> Callable:
        own = list(inspect.signature(body, eval_str=True).parameters.values())[1:]
        options = options_of(model, completions=completions)

        def run(ctx: typer.Context, **values: Any) -> Any:
            return body(lambda: typed_settings(ctx, options, note), **{p.name: values[p.name] for p in own})

        context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        run.__signature__ = inspect.Signature([context, *own, *(o.parameter for o in options)])
        run.__doc__, run.__name__ = body.__doc__, body.__name__
        app.command(**command)(run)
        return body

    return register
