"""How a rung's state looks: a glyph and a colour per verdict, a spinner while running."""

from __future__ import annotations

from rich.text import Text

from ladder.cli_output import STYLE
from ladder.models import Status

RUNNING = "running"
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
RUNNING_STYLE = "bold cyan"

# The CLI's glyphs, so `ladder probe` and `ladder tui` speak alike; `not run` needs to be visible here.
GLYPHS: dict[Status, tuple[str, str]] = {**STYLE, Status.NOT_RUN: ("○", "grey50")}


def glyph(state: Status | str, frame: int = 0) -> Text:
    if state == RUNNING:
        return Text(SPINNER[frame % len(SPINNER)], style=RUNNING_STYLE)
    mark, style = GLYPHS[Status(state)]
    return Text(mark, style=style)


def state_label(state: Status | str) -> Text:
    """`✘ fail`, `⠋ running`: the glyph and the word (colour is never the only signal)."""
    if state == RUNNING:
        return Text.assemble(glyph(state), (" running", RUNNING_STYLE))
    mark, style = GLYPHS[Status(state)]
    return Text(f"{mark} {Status(state).value}", style=style)
