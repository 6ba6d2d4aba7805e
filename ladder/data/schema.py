"""The keys a config consumer knows, with their types and defaults: a dataclass (such as
`transformers.TrainingArguments`), a pydantic model, or an argparse parser (or a function
returning one). Values are checked against the declared types without running the consumer.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

MISSING = object()


class SchemaError(Exception):
    """The object is not something whose keys can be read."""


@dataclass
class SchemaField:
    name: str
    annotation: Any = None  # None: not judged
    default: Any = MISSING
    nested: "Schema | None" = None


@dataclass
class Schema:
    name: str
    kind: str
    fields: dict[str, SchemaField] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # other spellings the consumer accepts -> field

    def lookup(self, key: str) -> SchemaField | None:
        name = self.aliases.get(key, key)
        return self.fields.get(name)


def schema_of(obj: Any, depth: int = 0) -> Schema:
    name = getattr(obj, "__name__", type(obj).__name__)
    if isinstance(obj, argparse.ArgumentParser):
        return _from_argparse(obj, name)
    if isinstance(obj, type) and dataclasses.is_dataclass(obj):
        return _from_dataclass(obj, depth)
    if isinstance(obj, type) and hasattr(obj, "model_fields") and hasattr(obj, "model_validate"):
        return _from_pydantic(obj, depth)
    if callable(obj) and not isinstance(obj, type):
        try:
            made = obj()
        except Exception as exc:  # the user's factory: say what it raised
            raise SchemaError(f"calling {name}() raised {type(exc).__name__}: {exc}") from None
        if isinstance(made, argparse.ArgumentParser):
            return _from_argparse(made, name)
        raise SchemaError(f"{name}() returned {type(made).__name__}, not an argparse.ArgumentParser")
    raise SchemaError(f"{name} is not a dataclass, a pydantic model or an argparse parser (factory)")


def _hints(cls) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # unresolvable forward references: judge only what resolves
        return {}


def _nested(annotation: Any, depth: int) -> "Schema | None":
    if depth > 4:
        return None
    for candidate in _arms(annotation):
        if isinstance(candidate, type) and (dataclasses.is_dataclass(candidate) or hasattr(candidate, "model_fields")):
            return schema_of(candidate, depth + 1)
    return None


def _arms(annotation: Any) -> tuple:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _from_dataclass(cls, depth: int) -> Schema:
    hints = _hints(cls)
    schema = Schema(cls.__name__, "dataclass")
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        annotation = hints.get(f.name, f.type if not isinstance(f.type, str) else None)
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            try:
                default = f.default_factory()
            except Exception:
                default = MISSING
        schema.fields[f.name] = SchemaField(f.name, annotation, MISSING if default is dataclasses.MISSING else default,
                                            _nested(annotation, depth))
    return schema


def _from_pydantic(cls, depth: int) -> Schema:
    schema = Schema(cls.__name__, "pydantic")
    for name, info in cls.model_fields.items():
        default = MISSING if info.is_required() else info.get_default(call_default_factory=True)
        schema.fields[name] = SchemaField(name, info.annotation, default, _nested(info.annotation, depth))
        if info.alias and info.alias != name:
            schema.aliases[info.alias] = name
    return schema


def _from_argparse(parser: argparse.ArgumentParser, name: str) -> Schema:
    schema = Schema(name, "argparse")
    for action in parser._actions:  # argparse has no public API for its actions
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)) or action.dest == argparse.SUPPRESS:
            continue
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            annotation: Any = bool
        elif action.choices is not None:
            annotation = typing.Literal[tuple(action.choices)]
        elif isinstance(action.type, type):
            annotation = action.type
        elif action.type is None:
            annotation = str
        else:
            annotation = None
        if action.nargs in ("*", "+") or isinstance(action.nargs, int) and action.nargs > 1:
            annotation = list[annotation] if annotation is not None else list
        schema.fields[action.dest] = SchemaField(action.dest, annotation, action.default)
        for option in action.option_strings:
            schema.aliases[option.lstrip("-").replace("-", "_")] = action.dest
            schema.aliases[option.lstrip("-")] = action.dest
    return schema


def type_problem(value: Any, annotation: Any) -> str | None:
    """Why `value` does not fit `annotation`, or None when it fits (or the type is not judged)."""
    if annotation is None or annotation is Any or isinstance(annotation, (str, typing.TypeVar)):
        return None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        arms = typing.get_args(annotation)
        problems = [type_problem(value, arm) for arm in arms]
        if any(p is None for p in problems):
            return None
        return _expected_message(value, annotation)
    if annotation is type(None):
        return None if value is None else "expected null"
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        return None if value in choices else f"expected one of {', '.join(map(repr, choices))}"
    if origin in (list, tuple, set, frozenset, typing.Sequence) or annotation in (list, tuple, set):
        if not isinstance(value, (list, tuple)):
            return _expected_message(value, annotation)
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if len(args) == 1:
            for item in value:
                problem = type_problem(item, args[0])
                if problem:
                    return f"an item: {problem}"
        return None
    if origin in (dict, typing.Mapping) or annotation is dict:
        return None if isinstance(value, dict) else _expected_message(value, annotation)
    if not isinstance(annotation, type):
        return None
    if issubclass(annotation, enum.Enum):
        members = [m.value for m in annotation] + [m.name for m in annotation]
        return None if value in members or isinstance(value, annotation) else \
            f"expected one of {', '.join(map(repr, [m.value for m in annotation]))}"
    if annotation is bool:
        return None if isinstance(value, bool) else _expected_message(value, annotation)
    if annotation is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else _expected_message(value, annotation)
    if annotation is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else \
            _expected_message(value, annotation)
    if annotation is str:
        return None if isinstance(value, str) else _expected_message(value, annotation)
    if issubclass(annotation, PurePath):
        return None if isinstance(value, str) else _expected_message(value, annotation)
    if dataclasses.is_dataclass(annotation) or hasattr(annotation, "model_fields"):
        return None if isinstance(value, dict) else _expected_message(value, annotation)
    return None  # a type ladder does not know how the consumer converts: not judged


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _expected_message(value: Any, annotation: Any) -> str:
    message = f"expected {_type_name(annotation)}, got {type(value).__name__} {value!r}"
    if isinstance(value, str) and _floaty(value) and type_problem(1.0, annotation) is None:
        message += " (YAML reads a number like 2e-4 without a dot as text: write 2.0e-4)"
    return message


def _floaty(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
