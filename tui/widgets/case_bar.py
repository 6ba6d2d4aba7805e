"""The header: which ladder, and the case it walks (model, base, harness)."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets import Static

from ladder.case import Case


def short(value: str) -> str:
    """A path as its last part (`file.py:func` keeps the function); commands as they are."""
    target, sep, name = value.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{Path(target).name}:{name}"
    if "/" in value and " " not in value:
        return Path(value).name or value
    return value


def case_line(ladder_name: str, case: Case) -> Text:
    parts: list[tuple[str, str]] = []
    if case.model:
        parts.append(("model", short(case.model)))
    if case.base:
        parts.append(("base", short(case.base)))
    harness = case.harness or case.harness_cmd or case.transcript
    if harness:
        kind = "harness" if case.harness or case.harness_cmd else "transcript"
        parts.append((kind, short(harness)))
    text = Text.assemble(("ladder ", "bold"), (ladder_name, "bold"))
    if not parts:
        text.append("  no case given: rungs will skip", style="italic")
    for label, value in parts:
        text.append(f"  {label} ", style="dim")
        text.append(value)
    return text


class CaseBar(Static):
    def __init__(self, ladder_name: str, case: Case, **kwargs) -> None:
        super().__init__(case_line(ladder_name, case), **kwargs)
