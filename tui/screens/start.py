"""Shown instead of the ladder when the case or the ladder is bad input (exit status 2)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Label, Static

from ladder.errors import Problem

EXIT_BAD_INPUT = 2


class StartScreen(Screen[None]):
    """The same messages `ladder probe` prints for the same input, one per problem."""

    BINDINGS = [Binding("q,escape", "quit", "quit")]

    def __init__(self, problems: list[Problem | str]) -> None:
        super().__init__()
        self.problems = problems

    def compose(self) -> ComposeResult:
        with Vertical(id="start"):
            yield Label(Text("ladder cannot start: the input needs fixing", style="bold red"), id="start-title")
            for problem in self.problems:
                yield Static(Text(f"ladder: error: {problem}"), classes="start-problem")
            yield Static(Text("Fix what is named above (the file and line are given where known), then run "
                              "`ladder tui` again. `ladder schema case` prints the case format; "
                              "`ladder validate FILE` checks a ladder.", style="dim"), id="start-hint")
        yield Footer()

    def action_quit(self) -> None:
        self.app.exit(EXIT_BAD_INPUT, return_code=EXIT_BAD_INPUT)
