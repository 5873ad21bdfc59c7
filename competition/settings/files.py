"""Settings files: a YAML or JSON mapping, read as a settings file needs (a repeated key and an
alias bomb refused in one line, a byte-order mark accepted)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from competition.errors import CompeteError

MOST_VALUES = 100_000  # values in a settings file once its YAML aliases are expanded


def _first_repeated(keys: list) -> Any:
    seen: set = set()
    for key in keys:
        if isinstance(key, (str, int, float, bool)) or key is None:
            if key in seen:
                return key
            seen.add(key)
    return None


class _SettingsLoader(yaml.SafeLoader):
    """YAML as a settings file needs it: a key given twice is an error, not 'the later one wins'."""

    def construct_mapping(self, node, deep=False):
        repeated = _first_repeated([self.construct_object(key, deep=deep) for key, _ in node.value])
        if repeated is not None:
            raise yaml.constructor.ConstructorError(None, None, f"key {repeated!r} is given twice", node.start_mark)
        return super().construct_mapping(node, deep)


def _unique_pairs(pairs: list) -> dict:
    repeated = _first_repeated([key for key, _ in pairs])
    if repeated is not None:
        raise ValueError(f"key {repeated!r} is given twice")
    return dict(pairs)


def _too_many_values(value: Any, budget: int = MOST_VALUES) -> bool:
    """Walks the value as a reader of it would, each alias again, and stops at `budget`: a 500-byte
    YAML with nested anchors is gigabytes once printed or checked."""
    stack, count = [value], 0
    while stack:
        count += 1
        if count > budget:
            return True
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def read_settings_file(path: str | Path, what: str = "config file") -> dict:
    """A YAML or JSON mapping (a config file, a run's config.json, a sweep file, a recipe); a UTF-8
    byte-order mark is read, a repeated key and an alias bomb are refused in one line."""
    path = Path(path)
    if not path.is_file():
        raise CompeteError(f"{path}: {what} not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
        if path.suffix.lower() == ".json":
            data = json.loads(text, object_pairs_hook=_unique_pairs)
        else:
            data = yaml.load(text, Loader=_SettingsLoader)  # noqa: S506 - a SafeLoader subclass
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise CompeteError(f"{path}: cannot parse ({str(error).splitlines()[0]})") from error
    if not isinstance(data, dict):
        raise CompeteError(f"{path}: expected a mapping of settings")
    if _too_many_values(data):
        raise CompeteError(f"{path}: more than {MOST_VALUES:,} values once its YAML aliases are expanded")
    return data
