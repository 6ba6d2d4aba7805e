"""Events the runner emits; the CLI's progress display and the TUI consume them."""

from __future__ import annotations

from dataclasses import dataclass

from ladder.models import Report, Rung, RungResult


@dataclass(frozen=True)
class RunStarted:
    order: list[str]


@dataclass(frozen=True)
class RungStarted:
    rung: Rung
    position: int
    total: int


@dataclass(frozen=True)
class RungProgress:
    rung: Rung
    message: str
    fraction: float | None


@dataclass(frozen=True)
class RungFinished:
    rung: Rung
    result: RungResult


@dataclass(frozen=True)
class RunFinished:
    report: Report


Event = RunStarted | RungStarted | RungProgress | RungFinished | RunFinished
