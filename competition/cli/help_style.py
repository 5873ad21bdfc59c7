"""One look for every command's `--help`, the one `train` and `submit` have from their settings:
a value shown as N, X, TEXT, PATH or NAME, nothing after a switch (`--help` included), and a
choice's values beside its flag only while they fit one line; a longer list goes in the help
text, which wraps between words (typer folds a long `<a|b|c>` mid-word). Applied to each
command as the CLI looks it up, so a command added later gets it too (a test reads every help).
"""

from __future__ import annotations

TYPE_METAVARS = {"int": "N", "float": "X", "str": "TEXT", "Path": "PATH"}
CHOICES_BESIDE_FLAG = 12  # longest `{a|b|c}` kept beside its flag (a wider one is folded at 80 columns)


def _annotation_name(param) -> str:
    """The value's type name (typer has unwrapped Optional[X] to X)."""
    return getattr(getattr(getattr(param, "type_descriptor", None), "annotation", None), "__name__", "")


def _choices(param) -> tuple[str, ...]:
    return tuple(str(c) for c in getattr(getattr(param, "type_descriptor", None), "choices", None) or ())


def style_option(param) -> None:
    """Give an option declared without a metavar the house one (an argument: its name in capitals)."""
    if param.param_type_name == "argument":
        param.metavar = param.name.upper()
        param.display_type_rich = lambda ctx: ""  # the capitalised name says it; no `<path>` beside it
        return
    if param.metavar is not None:
        return
    if getattr(param, "is_flag", False):
        param.metavar = ""
    elif choices := _choices(param):
        beside = "{" + "|".join(choices) + "}"
        if len(beside) <= CHOICES_BESIDE_FLAG:
            param.metavar = beside
        else:
            param.metavar = "NAME"
            if not all(choice in (param.help or "") for choice in choices):
                param.help = f"{param.help or ''} One of: {', '.join(choices)}.".strip()
    else:
        param.metavar = TYPE_METAVARS.get(_annotation_name(param), "TEXT")


def style_command(command, ctx) -> None:
    for param in command.get_params(ctx):
        style_option(param)
