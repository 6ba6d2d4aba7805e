"""The main screen: the ladder on the left, the selected rung on the right, keys in the footer.

The screen drives `ladder.runner.Runner` and nothing else: it never calls a probe.
Rungs run in a thread worker; the runner's events come back as `RunnerEvent`
messages, and the screen keeps its own copy of the results from them, so the UI
thread never reads the runner while a worker writes it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, OptionList
from textual.worker import Worker, WorkerState

from ladder.case import Case
from ladder.errors import InputError
from ladder.events import RungFinished, RungProgress, RungStarted
from ladder.loader import Ladder
from ladder.models import RungResult, Status
from ladder.registry import ProbeRegistry
from ladder.report.writers import write_report
from ladder.runner import Runner

from ..messages import RunnerEvent, WalkDone
from ..widgets.case_bar import CaseBar, case_line
from ..widgets.ladder_list import LadderList
from ..widgets.rung_detail import RungDetail, RungView
from ..widgets.status import RUNNING
from .confirm import ConfirmScreen
from .help import HelpScreen
from .skip import SkipScreen

REPORT_NAME = "ladder-report"
WALKING_ACTIONS = {"run_next", "run_selected", "run_all", "skip", "fixed", "rerun", "export"}
VERIFIED = (Status.PASS, Status.WARN, Status.SKIP)  # a verdict the user has seen and may walk past


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[:end + 1]


class WalkScreen(Screen[None]):
    BINDINGS = [
        Binding("n", "run_next", "next"),
        Binding("enter", "run_selected", "run"),
        Binding("a", "run_all", "all"),
        Binding("s", "skip", "skip"),
        Binding("f", "fixed", "fixed it"),
        Binding("r", "rerun", "re-run"),
        Binding("c,escape", "cancel", "cancel", key_display="c"),
        Binding("e", "export", "export"),
        Binding("space", "page_detail", "page", show=False),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, ladder: Ladder, case: Case, registry: ProbeRegistry | None = None, *,
                 export_dir: Path | None = None, warnings: list[str] | None = None,
                 reload_case: Callable[[], Case] | None = None) -> None:
        super().__init__()
        self.ladder = ladder
        self.case = case
        self.reload_case = reload_case  # `f` reads the case file again: the fix may be in it
        self.export_dir = export_dir or Path.cwd()
        self.warnings = warnings or []
        self.runner = Runner(ladder, case, registry=registry, on_event=self._emit)
        self.results: dict[str, RungResult] = {}  # the UI thread's copy, from RungFinished events
        self.running: str | None = None
        self.busy = False
        self.cancel_event: threading.Event | None = None
        self.progress: dict[str, tuple[str, float | None]] = {}
        self._progress_dirty = False

    # ---- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield CaseBar(self.ladder.name, self.case, id="case-bar")
        with Horizontal(id="main"):
            yield LadderList(self.ladder, id="ladder")
            yield RungDetail(id="detail")
        yield Footer()

    def on_mount(self) -> None:
        ladder_list = self.query_one(LadderList)
        if self.ladder.order:
            ladder_list.select_rung(self.ladder.order[0])
        else:
            self.notify("This ladder has no rungs.", severity="warning")
        ladder_list.focus()
        self.set_interval(0.1, self._tick)
        for warning in self.warnings:
            self.notify(warning, title="plugin", severity="warning", timeout=10, markup=False)
        self._refresh_detail()

    @property
    def ladder_list(self) -> LadderList:
        return self.query_one(LadderList)

    @property
    def selected(self) -> str | None:
        return self.ladder_list.selected_rung

    # ---- state ---------------------------------------------------------------------------------

    def blocker_of(self, rung_id: str) -> str | None:
        """The runner's answer, from the UI thread's copy of the results."""
        return self.runner.blocker_of(rung_id, self.results)

    def state_of(self, rung_id: str) -> Status | str:
        if rung_id == self.running:
            return RUNNING
        return self.runner.state_of(rung_id, self.results)

    def _refresh_states(self) -> None:
        for rung_id in self.ladder.order:
            self.ladder_list.set_state(rung_id, self.state_of(rung_id))

    def _refresh_detail(self) -> None:
        rung_id = self.selected
        if rung_id is None:
            return
        message, fraction = self.progress.get(rung_id, ("", None))
        self.query_one(RungDetail).show(RungView(
            rung=self.ladder.rung(rung_id), position=self.ladder.order.index(rung_id) + 1,
            total=len(self.ladder.order), state=self.state_of(rung_id), result=self.results.get(rung_id),
            blocker=self.blocker_of(rung_id), progress_message=message, progress_fraction=fraction))

    def _tick(self) -> None:
        if self.running:
            self.ladder_list.tick()
        if self._progress_dirty:
            self._progress_dirty = False
            if self.running and self.selected == self.running:
                self._refresh_detail()

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._refresh_detail()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_run_selected()

    # ---- the runner's events -----------------------------------------------------------------

    def _emit(self, event) -> None:
        """Runner callback, called from worker and probe threads: hand over to the UI thread."""
        self.post_message(RunnerEvent(event))

    def on_runner_event(self, message: RunnerEvent) -> None:
        event = message.event
        if isinstance(event, RungStarted):
            self.running = event.rung.id
            self.progress[event.rung.id] = ("starting", None)
            self.ladder_list.set_state(event.rung.id, RUNNING)
            self.ladder_list.select_rung(event.rung.id)  # follow the walk: its evidence comes here
        elif isinstance(event, RungProgress):
            if event.rung.id == self.running:  # shown by the next tick: a chatty probe costs nothing
                self.progress[event.rung.id] = (event.message, event.fraction)
                self._progress_dirty = True
            return
        elif isinstance(event, RungFinished):
            self.results[event.rung.id] = event.result
            self.progress.pop(event.rung.id, None)
            if self.running == event.rung.id:
                self.running = None
            self._refresh_states()
        self._refresh_detail()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "walk" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR,
                                                               WorkerState.CANCELLED):
            return
        crashed = f"{type(event.worker.error).__name__}: {event.worker.error}" if event.worker.error else None
        self.post_message(WalkDone(cancelled=bool(self.cancel_event and self.cancel_event.is_set()),
                                   crashed=crashed))

    def on_walk_done(self, message: WalkDone) -> None:
        self.busy = self.ladder_list.walking = False
        self.running = None
        self.cancel_event = None
        self._refresh_states()
        self._refresh_detail()
        self.refresh_bindings()
        if message.crashed:
            self.notify(message.crashed, title="the walk stopped", severity="error", timeout=15, markup=False)
        elif message.cancelled:
            self.notify("Cancelled.")

    # ---- walking -------------------------------------------------------------------------------

    def _walk(self, rung_ids: list[str], *, stop_at_fail: bool) -> None:
        """Run the rungs in a thread worker: one rung the user chose (confirmed if the discipline objects),
        or the runner's walk over several, where blocked ones stay blocked."""
        self.busy = self.ladder_list.walking = True
        self.refresh_bindings()
        cancel = self.cancel_event = threading.Event()
        runner = self.runner

        def walk() -> None:
            if len(rung_ids) == 1:
                runner.run_rung(rung_ids[0], cancel_event=cancel)
            else:
                runner.walk(rung_ids, stop_at_fail=stop_at_fail, cancel_event=cancel)

        self.run_worker(walk, name=f"walk {rung_ids[0]}", group="walk", thread=True, exit_on_error=False)

    def caution(self, rung_id: str) -> str | None:
        """Why running `rung_id` now breaks the discipline, if it does: a failed or unverified rung above."""
        index = self.ladder.order.index(rung_id)
        above = self.ladder.order[:index]
        blocker = self.blocker_of(rung_id)
        if blocker:
            return (f"{rung_id} comes after {blocker}, which failed: its evidence would be measured on "
                    f"something already broken. Fix {blocker} first, then press f on it.")
        failed = [r for r in above if self.state_of(r) is Status.FAIL]
        if failed:
            culprit = self.results[failed[0]]
            return (f"{failed[0]} failed above it: {culprit.summary.rstrip('.')}. Its fix comes first: "
                    f"once fixed, press f on it to re-run it and reset what is below.")
        unverified = [r for r in above if self.state_of(r) not in VERIFIED]
        if unverified:
            first = self.ladder.rung(unverified[0])
            crashed = " (its probe crashed)" if self.state_of(first.id) is Status.ERROR else ""
            more = len(unverified) - 1
            also = f" {more} more rung{'s' if more > 1 else ''} above {'are' if more > 1 else 'is'} not verified either." \
                if more else ""
            return (f"{first.id} is not verified yet{crashed}: {first_sentence(first.why)}{also} "
                    f"Walk the ladder from the top (n) before trusting {rung_id}.")
        return None

    def _run(self, rung_id: str, *, then_walk: list[str] | None = None, fixed: bool = False) -> None:
        """Run one rung (or walk from it), asking first when the discipline says so."""
        if self._refuse_while_busy():
            return
        reason = self.caution(rung_id)

        def go(confirmed: bool | None = True) -> None:
            if not confirmed:
                return
            if fixed:
                if not self._reload_case():
                    return
                below = self.runner.rerun_from(rung_id)
                for reset_id in below:
                    self.results.pop(reset_id, None)
                self._refresh_states()
                self.notify(f"Reset {len(below)} rung{'s' if len(below) > 1 else ''} from {rung_id} down; "
                            f"re-running {rung_id} with everything reloaded.")
            self._walk(then_walk or [rung_id], stop_at_fail=then_walk is not None)

        if reason:
            self.app.push_screen(ConfirmScreen(f"Run {rung_id} now?", reason), go)
        else:
            go()

    def _reload_case(self) -> bool:
        """Read the case again (flags and file, as at start); False when it no longer loads."""
        if self.reload_case is None:
            return True
        try:
            case = self.reload_case()
        except InputError as exc:
            self.notify("\n".join(f"ladder: error: {p}" for p in exc.problems), title="the case does not load",
                        severity="error", timeout=20, markup=False)
            return False
        self.case = self.runner.case = case
        self.query_one(CaseBar).update(case_line(self.ladder.name, case))
        return True

    def _refuse_while_busy(self) -> bool:
        if self.busy:
            self.notify(f"{self.running or 'a rung'} is running: wait for it, or press c to cancel it.",
                        severity="warning")
        return self.busy

    def _remaining(self) -> list[str]:
        return self.runner.remaining(self.results)

    # ---- actions ---------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """While a rung runs the footer offers only what can be done: cancel, help, quit."""
        if action == "cancel":
            return self.busy
        if action in WALKING_ACTIONS:
            return not self.busy
        return True

    def action_run_next(self) -> None:
        remaining = self._remaining()
        if not remaining:
            self.notify("Every rung has a verdict. e exports the report; f on a rung you fixed re-runs it.")
            return
        self.ladder_list.select_rung(remaining[0])
        self._run(remaining[0])

    def action_run_all(self) -> None:
        remaining = self._remaining()
        if not remaining:
            self.notify("Every rung has a verdict. e exports the report; f on a rung you fixed re-runs it.")
            return
        self._run(remaining[0], then_walk=remaining)

    def action_run_selected(self) -> None:
        if self.selected:
            self._run(self.selected)

    def action_rerun(self) -> None:
        self.action_run_selected()

    def action_fixed(self) -> None:
        if self.selected:
            self._run(self.selected, fixed=True)

    def action_skip(self) -> None:
        rung_id = self.selected
        if rung_id is None or self._refuse_while_busy():
            return

        def skip(reason: str | None) -> None:
            if reason:
                self.runner.skip_rung(rung_id, reason)
                later = self.ladder.order[self.ladder.order.index(rung_id) + 1:]
                if later:
                    self.ladder_list.select_rung(later[0])

        self.app.push_screen(SkipScreen(self.ladder.rung(rung_id)), skip)

    def action_cancel(self) -> None:
        if self.busy and self.cancel_event is not None:
            self.cancel_event.set()
            self.notify(f"Cancelling {self.running or 'the walk'}...")

    def action_export(self) -> None:
        if self._refuse_while_busy():
            return
        report = self.runner.report(include_unwalked=True)
        json_path = self.export_dir / f"{REPORT_NAME}.json"
        md_path = self.export_dir / f"{REPORT_NAME}.md"
        try:
            write_report(report, "json", json_path)
            write_report(report, "md", md_path)
        except OSError as exc:
            self.notify(f"Could not write the report: {exc}", severity="error", timeout=15, markup=False)
            return
        self.notify(f"{json_path}\n{md_path}", title="report written", timeout=15, markup=False)
        self.last_export = (json_path, md_path)

    def action_page_detail(self) -> None:
        self.query_one(RungDetail).page_down_or_top()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen())

    def action_quit(self) -> None:
        if not self.busy:
            self.app.exit(0)
            return

        def answer(confirmed: bool | None) -> None:
            if confirmed:
                self.stop()
                self.app.exit(0)

        self.app.push_screen(ConfirmScreen("Quit?", f"A probe is running ({self.running or 'starting'}). "
                                                    "Quitting cancels it.", yes="Quit", no="Stay"), answer)

    def stop(self) -> None:
        """Cancel a running rung and release the model and other resources."""
        if self.cancel_event is not None:
            self.cancel_event.set()

    def on_unmount(self) -> None:
        self.stop()
        self.runner.resources.close()
