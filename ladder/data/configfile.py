"""Training configs (YAML, JSON, TOML) read safely, with the line of every key where the format gives it."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ladder.errors import InputError


class ConfigError(Exception):
    """A config file that cannot be read; the message says where and why."""


@dataclass
class ConfigFile:
    path: Path
    values: dict[str, Any]
    lines: dict[tuple[str, ...], int] = field(default_factory=dict)  # key path -> line (YAML only)

    def line_of(self, key: tuple[str, ...]) -> int | None:
        return self.lines.get(tuple(key))


def load_config(path: str | Path) -> ConfigFile:
    """Read a config by its extension (.yaml/.yml, .json, .toml; anything else tried as YAML)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            values = json.loads(path.read_text(encoding="utf-8"))
            return ConfigFile(path, _mapping(values, path))
        if suffix == ".toml":
            return ConfigFile(path, tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # TOMLDecodeError and JSONDecodeError too
        raise ConfigError(f"{path.name}: cannot read as {suffix[1:].upper()}: {exc}") from None
    from ladder.yamlpos import load_yaml_mapping

    import yaml

    try:
        values, positions = load_yaml_mapping(path, "training config")
    except InputError as exc:
        raise ConfigError(str(exc)) from None
    except yaml.YAMLError as exc:  # e.g. control characters, rejected before parsing starts
        raise ConfigError(f"{path.name}: malformed YAML: {str(exc).splitlines()[0]}") from None
    lines = {tuple(str(p) for p in loc): pos[0] for loc, pos in positions.items()
             if loc and isinstance(loc[-1], str) and not loc[-1].startswith("\0")}
    return ConfigFile(path, values, lines)


def _mapping(values: Any, path: Path) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ConfigError(f"{path.name}: expected a mapping of keys to values, found {type(values).__name__}")
    return values


def leaves(values: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterable[tuple[tuple[str, ...], Any]]:
    """(key path, value) for every non-mapping value, depth first in file order."""
    for key, value in values.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and value:
            yield from leaves(value, path)
        else:
            yield path, value


def find_keys(values: dict[str, Any], names: Iterable[str]) -> list[tuple[tuple[str, ...], Any]]:
    """Leaves whose own key is one of `names` (at any depth), in file order."""
    wanted = {n.lower() for n in names}
    return [(path, value) for path, value in leaves(values) if path[-1].lower() in wanted]


def first_value(values: dict[str, Any], names: Iterable[str], kind: type | tuple[type, ...] | None = None) -> Any:
    for _, value in find_keys(values, names):
        if kind is None or (isinstance(value, kind) and not isinstance(value, bool)):
            return value
    return None
