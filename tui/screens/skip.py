"""`s`: skip a rung, with the reason the user types (it goes into the report)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from ladder.models import Rung


class SkipScreen(ModalScreen[str | None]):
    """Dismissed with the reason, or None when the user backs out (escape)."""

    BINDINGS = [Binding("escape", "dismiss_none", "back")]

    def __init__(self, rung: Rung) -> None:
        super().__init__()
        self.rung = rung

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text(f"Skip {self.rung.id}?", style="bold"), id="dialog-title")
            yield Static(Text(f"A skipped rung is not verified: \"{self.rung.title}\" stays open. "
                              "Say why you skip it; the reason goes into the report."), id="dialog-body")
            yield Input(placeholder="the reason (enter to skip, escape to go back)", id="skip-reason")
            yield Label("", id="skip-hint")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        reason = " ".join(event.value.split())
        if not reason:
            self.query_one("#skip-hint", Label).update(Text("type a reason first", style="bold yellow"))
            return
        self.dismiss(reason)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
