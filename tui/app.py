"""`ladder tui`: walk the ladder interactively.

`run_tui(args)` builds the case, the registry and the ladder from the same flags as
`ladder probe`; bad input opens a start screen with `ladder probe`'s messages (exit
status 2) instead of a traceback. `LadderApp` also takes a prepared ladder, case and
registry, which is how the tests drive it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from textual.app import App
from textual.screen import Screen

from ladder.case import Case
from ladder.errors import InputError, Problem
from ladder.loader import Ladder
from ladder.registry import ProbeRegistry

from .screens.start import StartScreen
from .screens.walk import WalkScreen


class LadderApp(App[int]):
    """Give it a ladder and a case (and the registry their probes come from), or the problems
    that kept them from loading."""

    CSS_PATH = "app.tcss"
    TITLE = "ladder"
    ENABLE_COMMAND_PALETTE = False

    def __init__(self, ladder: Ladder | None = None, case: Case | None = None,
                 registry: ProbeRegistry | None = None, *, problems: list[Problem | str] | None = None,
                 warnings: list[str] | None = None, export_dir: Path | None = None,
                 reload_case: Callable[[], Case] | None = None) -> None:
        super().__init__()
        if problems is None and ladder is None:
            raise ValueError("LadderApp needs a ladder, or the problems that kept it from loading")
        self.ladder = ladder
        self.case = case or Case()
        self.registry = registry
        self.problems = problems
        self.warnings = warnings or []
        self.export_dir = export_dir
        self.reload_case = reload_case

    def get_default_screen(self) -> Screen:
        if self.problems is not None:
            return StartScreen(self.problems)
        assert self.ladder is not None
        return WalkScreen(self.ladder, self.case, self.registry, export_dir=self.export_dir,
                          warnings=self.warnings, reload_case=self.reload_case)

    @property
    def walk(self) -> WalkScreen:
        """The walk screen (under any dialog open on top of it)."""
        return next(s for s in self.screen_stack if isinstance(s, WalkScreen))


def build_app(args) -> LadderApp:
    """The app for `ladder tui` with these flags; bad input becomes the start screen."""
    from ladder.case import load_case
    from ladder.cli import _case_overrides, _registry
    from ladder.loader import load_ladder

    def read_case() -> Case:
        return load_case(args.case, _case_overrides(args))

    try:
        case = read_case()
        registry = _registry(args)
        ladder = load_ladder(args.ladder, registry)
    except InputError as exc:
        return LadderApp(problems=list(exc.problems))
    return LadderApp(ladder, case, registry, warnings=list(registry.problems), reload_case=read_case)


def run_tui(args) -> int:
    app = build_app(args)
    app.run()
    return app.return_code or 0
