"""The selected rung on the right: hypothesis, why it matters, the evidence once run, the fix."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, ProgressBar, Static

from ladder.models import Rung, RungResult, Status

from .evidence import evidence_widgets
from .status import RUNNING, RUNNING_STYLE, state_label


@dataclass
class RungView:
    """What the detail pane shows about one rung."""

    rung: Rung
    position: int
    total: int
    state: Status | str
    result: RungResult | None = None
    blocker: str | None = None
    progress_message: str = ""
    progress_fraction: float | None = None


def seconds_text(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"


def verdict_text(view: RungView) -> Text:
    if view.state == RUNNING:
        return Text.assemble(("running", RUNNING_STYLE), "  ", ("c or escape cancels it", "dim"))
    result = view.result
    if result is None:
        if view.blocker:
            return Text.assemble(state_label(Status.BLOCKED), f"  {view.blocker!r} failed and this rung "
                                 f"comes after it: fix that first (f on it when fixed)")
        return Text.assemble(state_label(Status.NOT_RUN), "  ",
                             ("enter runs it; n runs the next rung in order", "dim"))
    text = Text.assemble(state_label(result.status), "  ", result.summary)
    if result.seconds >= 1:
        text.append(f"  ({seconds_text(result.seconds)})", style="dim")
    return text


class RungDetail(VerticalScroll):
    """Fixed parts updated in place; the evidence is rebuilt only when the result changes."""

    def page_down_or_top(self) -> None:
        """space: the next page of a long rung, then back to its top."""
        if self.scroll_y >= self.max_scroll_y:
            self.scroll_home(animate=False)
        else:
            self.scroll_page_down(animate=False)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shown: tuple[str, int] | None = None  # (rung id, id of the result object)

    def compose(self) -> ComposeResult:
        yield Static(id="rung-title")
        yield Static(id="rung-hypothesis")
        yield Static(id="rung-verdict")
        with Vertical(id="rung-progress"):
            yield ProgressBar(total=None, show_eta=False, id="rung-progress-bar")
            yield Label(id="rung-progress-message")
        yield Static(id="rung-culprit-fix", classes="culprit")
        # the evidence comes right under the verdict: it is what a person came to see
        yield Vertical(id="rung-evidence")
        traceback = Static(id="rung-traceback")
        traceback.border_title = "traceback: the probe crashed"
        yield traceback
        yield Static(id="rung-why")
        yield Static(id="rung-fix")

    def show(self, view: RungView) -> None:
        rung = view.rung
        self.query_one("#rung-title", Static).update(Text.assemble(
            (f"{view.position}/{view.total}  ", "dim"), (rung.id, "bold"), ("  " + rung.tier.value, "dim")))
        self.query_one("#rung-hypothesis", Static).update(Text(rung.title, style="italic"))
        self.query_one("#rung-verdict", Static).update(verdict_text(view))
        self.query_one("#rung-why", Static).update(Text.assemble(("Why it matters: ", "bold"),
                                                                 " ".join(rung.why.split())))
        self.query_one("#rung-fix", Static).update(Text.assemble(("Fix: ", "bold"), " ".join(rung.fix.split())))
        failed = view.result is not None and view.result.status is Status.FAIL and view.state != RUNNING
        culprit_fix = self.query_one("#rung-culprit-fix", Static)
        culprit_fix.display = failed  # the culprit's fix goes right under its verdict
        culprit_fix.update(Text.assemble(("Fix: ", "bold"), " ".join(rung.fix.split())))
        self.query_one("#rung-fix").display = not failed
        self.show_progress(view)
        result = view.result if view.state != RUNNING else None
        shown = (rung.id, id(result))
        if shown != self._shown:
            if self._shown is None or self._shown[0] != rung.id:
                self.scroll_home(animate=False)
            self._shown = shown
            self._show_evidence(result)

    def show_progress(self, view: RungView) -> None:
        box = self.query_one("#rung-progress")
        box.display = view.state == RUNNING
        if view.state != RUNNING:
            return
        bar = self.query_one("#rung-progress-bar", ProgressBar)
        if view.progress_fraction is None:
            bar.update(total=None)
        else:
            bar.update(total=100, progress=100 * max(0.0, min(1.0, view.progress_fraction)))
        self.query_one("#rung-progress-message", Label).update(Text(view.progress_message))

    def _show_evidence(self, result: RungResult | None) -> None:
        box = self.query_one("#rung-evidence", Vertical)
        box.remove_children()
        if result is not None and result.evidence:
            box.mount_all(evidence_widgets(result.evidence))
        traceback = self.query_one("#rung-traceback", Static)
        traceback.display = bool(result is not None and result.traceback)
        traceback.update(Text(result.traceback.rstrip()) if result is not None and result.traceback else "")
