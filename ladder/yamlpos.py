"""Read a YAML file safely, remembering where every key and item sits.

pydantic reports an error at a location such as ``("rungs", 3, "tier")``; the
positions map turns that into ``file:line:col`` (the idea of dagster's and
rendercv's pydantic-YAML error handling).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# LibYAML's parser when PyYAML was built with it (about 10x faster), the pure-Python one otherwise.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

from ladder.errors import InputError

Location = tuple[int | str, ...]
Positions = dict[Location, tuple[int, int]]
VALUE = "\0value"  # suffix of a location: where the value (not the key) starts


def read_text_file(path: Path, what: str) -> str:
    """The text of a user's file, or an InputError that says what is wrong with it."""
    shown = str(path)
    if not path.exists():
        raise InputError.single(f"{what} not found: no such file", shown)
    if path.is_dir():
        raise InputError.single(f"{what} is a directory; expected a file", shown)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError.single(f"cannot read {what}: {exc.strerror or exc}", shown) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError.single(
            f"{what} is not UTF-8 text (byte {exc.start}); save it as UTF-8", shown) from None


def load_yaml_mapping(path: Path, what: str) -> tuple[dict[str, Any], Positions]:
    """Parse `path` with the safe loader; return the mapping and the position of each key path."""
    text = read_text_file(path, what)
    shown = str(path)
    try:
        loader = SAFE_LOADER(text)
    except yaml.YAMLError as exc:  # e.g. control characters (a binary file)
        raise InputError.single(f"{what} is not YAML text: {exc}", shown) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise InputError.single(f"{what} is empty; expected a YAML mapping", shown)
        data = loader.construct_document(node)
    except yaml.reader.ReaderError as exc:  # LibYAML reads lazily: control characters show up here
        raise InputError.single(f"{what} is not YAML text: {exc.reason} (character {exc.position + 1})",
                                shown) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise InputError.single(f"malformed YAML: {message}", shown,
                                mark.line + 1 if mark else None,
                                mark.column + 1 if mark else None) from None
    except yaml.YAMLError as exc:
        raise InputError.single(f"malformed YAML: {exc}", shown) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "nothing"
        raise InputError.single(f"{what} must be a YAML mapping (key: value), found {kind}",
                                shown, node.start_mark.line + 1, node.start_mark.column + 1)
    positions: Positions = {}
    _record_positions(node, (), positions)
    return data, positions


def _record_positions(node: yaml.Node, location: Location, positions: Positions) -> None:
    positions.setdefault(location, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            child = (*location, key)
            positions[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            positions[(*child, VALUE)] = (value_node.start_mark.line + 1, value_node.start_mark.column + 1)
            _record_positions(value_node, child, positions)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_positions(item, (*location, index), positions)


def position_of(positions: Positions, location: Location, value: bool = False
                ) -> tuple[int | None, int | None]:
    """The position of the key at `location` (of its value with `value=True`), or of its nearest ancestor."""
    loc = tuple(location)
    if value and (*loc, VALUE) in positions:
        return positions[(*loc, VALUE)]
    while loc:
        if loc in positions:
            return positions[loc]
        loc = loc[:-1]
    return positions.get((), (None, None))
