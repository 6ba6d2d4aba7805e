"""`?`: the keys, the glyphs, and the discipline the ladder asks for."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from ladder.models import Status

from ..widgets.status import RUNNING, state_label

KEYS = [
    ("n", "run the next rung in walk order"),
    ("enter", "run the selected rung (a click selects one)"),
    ("a", "run all remaining rungs in order; stops at a fail, like `ladder probe`"),
    ("s", "skip the selected rung, with a reason you type"),
    ("f", "\"I fixed it\": reload, re-run this rung and reset every rung below it"),
    ("r", "re-run the selected rung"),
    ("c / escape", "cancel the running rung"),
    ("space", "page through a long rung's evidence (or tab to it and scroll)"),
    ("e", "export the report (JSON + Markdown)"),
    ("?", "this help"),
    ("q", "quit (asks first while a probe runs)"),
]

DISCIPLINE = ("Start at the top. Each rung is a hypothesis, from the most mundane (your harness "
              "never applied the chat template) to the most exotic (a damaged layer seam). Look at "
              "the evidence of the first rung that fails, fix it, press f, and only then go down: "
              "a rung below a failed or unverified one measures something already broken.")

STATES = [(RUNNING, "the probe is running (progress below the verdict)"),
          (Status.PASS, "ruled out"), (Status.WARN, "suspicious, not conclusive"),
          (Status.FAIL, "confirmed: a culprit; its fix is shown"),
          (Status.SKIP, "cannot be tested with what the case gives (it says which flag would), or you skipped it"),
          (Status.BLOCKED, "a rung it comes after failed: fix that first"),
          (Status.ERROR, "the probe crashed: its traceback is shown, never a pass"),
          (Status.NOT_RUN, "not run yet")]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "close", key_display="esc")]

    def compose(self) -> ComposeResult:
        keys = Table.grid(padding=(0, 2))
        keys.add_column(style="bold", no_wrap=True)
        keys.add_column()
        for key, what in KEYS:
            keys.add_row(key, what)
        states = Table.grid(padding=(0, 2))
        states.add_column(no_wrap=True)
        states.add_column()
        for state, what in STATES:
            states.add_row(state_label(state), what)
        with VerticalScroll(id="help"):
            yield Label(Text("ladder: walk it from the top", style="bold"), id="help-title")
            yield Static(Text(DISCIPLINE), classes="help-text")
            yield Label(Text("Keys", style="bold"), classes="detail-heading")
            yield Static(keys)
            yield Label(Text("Verdicts", style="bold"), classes="detail-heading")
            yield Static(states)
            yield Label(Text("The mouse works too: click a rung to select it, click a key in the footer.",
                             style="dim"), classes="help-text")
            yield Label(Text("escape closes this help", style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)
