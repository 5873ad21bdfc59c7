"""How a setting is declared and checked (settings/files.py reads the files).

pydantic does the checking (types, ranges, choices, unknown keys); this module adds what a
user of a command line expects from it: one line naming the flag that is wrong, config keys
spelled like the flags, old spellings accepted with a note, and no bool taken for a number.
"""

from __future__ import annotations

import difflib
import logging
import reprlib
import typing
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from competition.errors import CompeteError

log = logging.getLogger(__name__)


def setting(
    default: Any,
    help: str,
    *,
    flags: tuple[str, ...] = (),
    old_flags: tuple[str, ...] = (),
    old_switches: dict[str, Any] | None = None,
    aliases: tuple[str, ...] = (),
    many: bool = False,
    path: Literal["", "file", "dir"] = "",
    metavar: str = "",
    complete: str = "",
    show_default: str | bool | None = None,
    **limits: Any,
) -> Any:
    """A setting: its default, the line `--help` shows, its limits (pydantic's ge, gt, le, lt)
    and, when the command line spells it otherwise than `--<name>`, its `flags` (a bool's pair
    as "--on/--off", short forms like "-d"). `old_flags` still work, with a note, and so do
    `old_switches`, old on/off flags each meaning one value now ({"--rerank": "k-reciprocal"}: as a
    flag or a file's `rerank: true`); `aliases` work
    unannounced and unlisted (a second spelling `--help` need not show). `many`: the
    flag may be repeated (train one run per --backbone); `path`: a file or a dir (the shell
    completes it); `metavar`: what `--help` shows for its value when the type does not say it
    (FILE, N and A,B come from the type); `complete`: what the shell completes it with (see
    cli/complete.py)."""
    extra = {
        "flags": list(flags),
        "old_flags": list(old_flags),
        "old_switches": dict(old_switches or {}),
        "aliases": list(aliases),
        "many": many,
        "path": path,
        "metavar": metavar,
        "complete": complete,
    }
    extra = {k: v for k, v in extra.items() if v} | ({} if show_default is None else {"show_default": show_default})
    return Field(default, description=help, json_schema_extra=extra, **limits)


def _mapping(value: Any, name: str) -> dict:
    if isinstance(value, BaseModel):  # a nested Settings given as itself (the Python API)
        return dict(value)
    if not isinstance(value, dict):
        raise CompeteError(f"'{name}' must be a mapping of settings (key: value lines), not {quoted(value)}")
    return dict(value)


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


class Settings(BaseModel):
    """A command's settings. Subclasses declare fields with `setting()`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    WHAT: ClassVar[str] = "setting"  # as in "unknown training setting 'x'"
    OLD_NAMES: ClassVar[dict[str, str]] = {}  # key a file may still use -> the setting it means now
    RECORD_KEYS: ClassVar[frozenset[str]] = frozenset()  # keys a saved file adds beside the settings
    PANEL: ClassVar[str | None] = None  # where `--help` groups a nested model's flags
    PANELS: ClassVar[dict[str, tuple[str, ...]]] = {}  # `--help` panel -> its settings, in the order shown
    HIDDEN: ClassVar[frozenset[str]] = frozenset()  # settings this command does not take (they keep their default)

    @model_validator(mode="before")
    @classmethod
    def _spelled_as_settings(cls, data: Any) -> Any:
        return cls.normalize(data) if isinstance(data, dict) else data

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic takes true for 1; a `epochs: true` in a file is a mistake, not one epoch
        if isinstance(value, bool) and cls.model_fields[info.field_name].annotation in (int, float):
            raise ValueError(f"must be a number, not {value}")
        return value

    @classmethod
    def shown(cls) -> dict[str, Any]:
        """The settings a command takes: flags, file keys, `--print-config`."""
        return {name: field for name, field in cls.model_fields.items() if name not in cls.HIDDEN}

    @classmethod
    def nested(cls) -> dict[str, type[Settings]]:
        """Fields that are settings of their own (submit's post-processing), flat on the command line."""
        return {
            name: field.annotation
            for name, field in cls.model_fields.items()
            if isinstance(field.annotation, type) and issubclass(field.annotation, Settings)
        }

    @classmethod
    def negations(cls) -> dict[str, str]:
        """Keys that set a switch off (`no_flip: true` is `flip: false`), from the flags' negative halves."""
        keys = {key: name for name, model in cls.nested().items() for key in model.negations()}
        for name, field in cls.shown().items():
            if bool not in (field.annotation, *typing.get_args(field.annotation)):  # a switch, or auto and a pair
                continue
            pairs = (field.json_schema_extra or {}).get("flags") or [flag_of(name)]
            for pair in pairs:
                off = pair.split("/")[1] if "/" in pair else f"--no-{pair[2:]}"
                keys[off[2:].replace("-", "_")] = name
        return keys

    @classmethod
    def file_keys(cls) -> list[str]:
        """Every setting as a file spells it (the flags' names), a nested model's flat."""
        nested = cls.nested()
        return [
            key
            for name in cls.shown()
            for key in (nested[name].file_keys() if name in nested else [name.replace("_", "-")])
        ]

    @classmethod
    def switches(cls) -> dict[str, tuple[str, Any]]:
        """Old on/off keys -> (the setting, the value `true` means now)."""
        return {
            flag[2:].replace("-", "_"): (name, meant)
            for name, field in cls.shown().items()
            for flag, meant in (field.json_schema_extra or {}).get("old_switches", {}).items()
        }

    @classmethod
    def spellings(cls) -> dict[str, str]:
        """Every key a file may use for a setting -> the setting: its name and its flags' spellings (a
        nested model's keys -> that model's field)."""
        keys = {key: name for name, model in cls.nested().items() for key in model.spellings()}
        for name, field in cls.shown().items():
            extra = field.json_schema_extra or {}
            for flag in extra.get("flags", []) + extra.get("old_flags", []) + extra.get("aliases", []):
                if flag.startswith("--"):
                    keys[flag.split("/")[0][2:].replace("-", "_")] = name
            keys[name] = name
        return keys | {key: name for key, (name, _) in cls.switches().items()}

    def __init__(self, **data: Any) -> None:
        """Settings checked as they are made; one line names the first wrong one."""
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise CompeteError(one_line(error, type(self))) from None

    @classmethod
    def from_dict(cls, data: dict) -> Settings:
        """Settings from a file, flags or a saved run."""
        return cls(**{str(key): value for key, value in data.items()})

    @classmethod
    def normalize(cls, data: dict) -> dict:
        """Keys as settings: dashes or underscores, flag spellings, old names (with a note), a
        nested model's keys flat or under its name, a saved file's record keys dropped."""
        data = {str(k).replace("-", "_"): v for k, v in data.items() if str(k) not in cls.RECORD_KEYS}
        spellings, negations, models = cls.spellings(), cls.negations(), cls.nested()
        given = {name: data.pop(name, None) for name in models}
        nested: dict[str, dict] = {name: {} for name in models}
        switched, settings = _switched(cls, data), {}
        for key, value in data.items():
            if key in negations and key not in spellings:
                key, value = negations[key], (not value if isinstance(value, bool) else value)
            setting = spellings.get(key, key)
            if setting in models:  # a nested model's key, flat: that model spells it
                nested[setting][key] = value
                continue
            if key in cls.OLD_NAMES:
                log.warning("setting '%s' is now '%s'", key, cls.OLD_NAMES[key])
            settings[cls.OLD_NAMES.get(key, setting)] = value
        settings |= switched
        for name, model in models.items():
            if isinstance(given[name], model) and not nested[name]:  # kept as it is (pydantic re-checks an assignment)
                settings[name] = given[name]
            else:
                settings[name] = model.normalize(_mapping(given[name] or {}, name) | nested[name])
        return settings

    def to_dict(self) -> dict:
        """The settings as a run's config.json and a leaderboard row keep them (nested models nested)."""
        hidden = {name: True for name in self.HIDDEN}
        hidden |= {name: set(model.HIDDEN) for name, model in self.nested().items() if model.HIDDEN}
        return self.model_dump(exclude=hidden or None)

    def flat(self) -> dict:
        """{setting: value}, a nested model's flat, as the command line and `--config` name them."""
        flat = {}
        for name, value in self:
            if isinstance(value, Settings):
                flat |= value.flat()
            elif name not in self.HIDDEN:
                flat[name] = value
        return flat

    def to_yaml(self) -> str:
        """The settings as a YAML file that `--config` reads back."""
        return yaml.safe_dump(self.to_file(), sort_keys=False, allow_unicode=True)

    def to_file(self) -> dict:
        """The settings as a `--config` file spells them: flag names, a nested model's flat."""
        return {name.replace("_", "-"): value for name, value in self.flat().items()}


def _switched(model: type[Settings], data: dict) -> dict:
    """{setting: value} of the old switches in `data` that are on (taken out of it; one wins over
    the setting's own key, as a run's steps merged over the defaults need)."""
    switches, on = model.switches(), {}
    for key, (name, _) in switches.items():
        if key not in data:
            continue
        value = data.pop(key)
        if not isinstance(value, bool):
            raise CompeteError(f"'{key}' must be true or false, not {quoted(value)}")
        if value:
            on.setdefault(name, []).append(key)
    for name, keys in on.items():
        if len(keys) > 1:
            raise CompeteError(f"{' and '.join(flag_of(k) for k in keys)} each set {flag_of(name)}: choose one")
        log.info("setting '%s: true' is now '%s: %s'", keys[0], name, switches[keys[0]][1])
    return {name: switches[keys[0]][1] for name, keys in on.items()}


REQUIREMENTS = {
    "greater_than_equal": lambda ctx: f">= {ctx['ge']}",
    "greater_than": lambda ctx: f"> {ctx['gt']}",
    "less_than_equal": lambda ctx: f"<= {ctx['le']}",
    "less_than": lambda ctx: f"< {ctx['lt']}",
    "literal_error": lambda ctx: f"one of {ctx['expected']}",
    "int_parsing": lambda ctx: "a whole number",
    "int_from_float": lambda ctx: "a whole number",
    "int_type": lambda ctx: "a whole number",
    "float_parsing": lambda ctx: "a number",
    "float_type": lambda ctx: "a number",
    "finite_number": lambda ctx: "a finite number",
    "bool_parsing": lambda ctx: "true or false",
    "bool_type": lambda ctx: "true or false",
    "string_type": lambda ctx: "text",
    "list_type": lambda ctx: "a list",
    "string_too_long": lambda ctx: f"at most {ctx['max_length']} characters",
}


_QUOTE = reprlib.Repr()  # keyword arguments only from Python 3.12
_QUOTE.maxstring = _QUOTE.maxother = 80
_QUOTE.maxlist = _QUOTE.maxdict = 6
_QUOTE.maxlevel = 2


def quoted(value: Any) -> str:
    """A value as a message shows it: at most a line, whatever the file held."""
    return _QUOTE.repr(value)


def one_line(error: ValidationError, model: type[Settings]) -> str:
    """The first problem as the user would fix it: `--epochs must be >= 1, not 0`."""
    problems = error.errors()
    unknown = sorted(".".join(map(str, p["loc"])) for p in problems if p["type"] == "extra_forbidden")
    if unknown:
        return unknown_keys(unknown, model)
    problem = problems[0]
    names = [str(part) for part in problem["loc"] if isinstance(part, str)]
    flag = flag_of(names[-1]) if names else model.WHAT
    if problem["type"] == "value_error":
        message = str(problem["ctx"]["error"])
        return f"{flag} {message}" if message.startswith("must") else message
    requirement = REQUIREMENTS.get(problem["type"])
    if requirement is None:
        return f"{flag}: {problem['msg']}, not {quoted(problem['input'])}"
    return f"{flag} must be {requirement(problem.get('ctx', {}))}, not {quoted(problem['input'])}"


def unknown_keys(unknown: list[str], model: type[Settings]) -> str:
    """`unknown submit setting 'fliip' (did you mean 'flip'?)`, or the keys there are."""
    known = model.file_keys()
    spelled = [key.replace("_", "-") for key in unknown]
    close = {key: difflib.get_close_matches(key, known, n=1) for key in spelled}
    what = f"unknown {model.WHAT}{'s' if len(spelled) > 1 else ''} " + ", ".join(f"'{key}'" for key in spelled)
    if all(close.values()):
        return f"{what} (did you mean {', '.join(repr(close[key][0]) for key in spelled)}?)"
    return f"{what}; the {model.WHAT}s are: {', '.join(known)}"
