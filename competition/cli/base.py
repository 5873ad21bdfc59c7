"""The `compete` application: its global options, and how every command reports an error
(one line, exit code 1) or an interruption (finished files kept)."""

from __future__ import annotations

import inspect
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from competition.cli.help_style import style_command, style_option
from competition.errors import CompeteError
from competition.io import counted, printable
from competition.settings.train import DATA_HELP

GLOBAL_FLAGS = ("--debug", "--quiet", "-q", "--offline")


class _GlobalFlagsAnywhere(TyperGroup):
    """`compete submit ... --debug` means `compete --debug submit ...`, as people type it; every
    command's help in one style (cli/help_style.py)."""

    def get_command(self, ctx, name: str):
        command = super().get_command(ctx, name)
        if command is not None:
            style_command(command, ctx)
        return command

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            style_option(param)
        return params

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)  # after "--" every word is a value
        flags = [word for word in args[:end] if word in GLOBAL_FLAGS]
        others = [word for word in args[:end] if word not in GLOBAL_FLAGS]
        return super().parse_args(ctx, flags + others + args[end:])


app = typer.Typer(
    cls=_GlobalFlagsAnywhere,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Landmark image retrieval: augment a training set, train backbones, submit ranked results.",
)
_state = {"debug": False}

DataOption = Annotated[
    Path,
    typer.Option(
        "--data",
        "-d",
        help=DATA_HELP,
    ),
]


def say(text: object = "", fg: str | None = None, err: bool = False) -> None:
    """Every line the CLI prints goes through here: control characters shown escaped."""
    typer.secho(printable(str(text)), fg=fg, err=err)


class _PrintableFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def _run(action):
    """Run a command body; a CompeteError or an OS error (disk full, permission) becomes one
    line on stderr and exit code 1. Files are written atomically, so nothing half-written stays."""
    try:
        return action()
    except (CompeteError, OSError) as error:
        if _state["debug"]:
            raise
        message = (
            str(error)
            if isinstance(error, CompeteError)
            else (f"{error.filename}: {error.strerror}" if error.filename else f"{type(error).__name__}: {error}")
        )
        say(f"error: {message}", fg="red", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt as stop:
        how = "stopped by SIGTERM" if isinstance(stop, Terminated) else "interrupted"
        say(f"{how}: finished files are kept; re-run the same command to continue", err=True)
        raise typer.Exit(143 if isinstance(stop, Terminated) else 130) from None


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, a scheduler's kill) taken as Ctrl-C is: worker pools are stopped,
    finished files kept, and one line says how to go on, instead of dying mid-write."""


def _stop_on_sigterm() -> None:
    import signal
    import threading

    def handler(signum, frame):
        raise Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="Never download weights (also COMPETE_OFFLINE=1 or HF_HUB_OFFLINE=1).")
    ] = False,
) -> None:
    _state["debug"] = debug
    _stop_on_sigterm()
    if offline:
        os.environ["COMPETE_OFFLINE"] = "1"
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # names from files and folders are printed escaped
        if type(handler) is logging.StreamHandler:  # ours, not a notebook's or a test runner's
            handler.setFormatter(_PrintableFormatter("%(levelname)s: %(message)s"))
    if not quiet and not sys.stderr.isatty():  # no progress bar (nohup, CI, a notebook): a line per epoch instead
        logging.getLogger("competition.train").setLevel(logging.INFO)
    _state["progress"] = not quiet


def _progress() -> bool:
    """Progress on stderr: bars on a terminal, a line every few seconds of long work when piped."""
    return _state.get("progress", True)


JsonOption = Annotated[
    bool,
    typer.Option("--json", metavar="", help="Print one JSON object on stdout (messages go to stderr), for scripts."),
]
ConfigOption = Annotated[
    Optional[Path],
    typer.Option(
        metavar="FILE",
        help="YAML/JSON file of settings, keys spelled as the flags (a run's own config.json works for train); "
        "flags typed here override it.",
    ),
]
PrintConfigOption = Annotated[
    bool,
    typer.Option(
        "--print-config",
        metavar="",
        help="Print the settings this command would use, as a YAML file that --config reads back, and exit.",
    ),
]


def unwrap_help(app: typer.Typer) -> None:
    """Docstrings are wrapped for the source; `--help` rewraps each paragraph to the terminal."""
    for command in app.registered_commands:
        text = inspect.cleandoc(command.help or command.callback.__doc__ or "")
        command.help = "\n\n".join(" ".join(paragraph.split()) for paragraph in text.split("\n\n"))


def _note(text: str) -> None:
    say(text, fg="yellow", err=True)


def _print_json(payload: dict) -> None:
    """One JSON object on stdout; NaN (a score with no queries to average) becomes null, as strict JSON wants."""
    from competition.io import json_text

    say(json_text(payload, indent=1))


def _report_skipped(skipped: list[str], noun: str, what: str) -> None:
    if skipped:
        say(
            f"{counted(len(skipped), noun)} {what} (--strict to stop instead); first: {skipped[0]}",
            fg="yellow",
            err=True,
        )
