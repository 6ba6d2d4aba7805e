"""What `ladder probe` prints: a progress line per rung while it runs, then the table and the culprit."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ladder.events import Event, RunFinished, RungFinished, RungProgress, RungStarted
from ladder.models import Report, Status

STYLE = {
    Status.PASS: ("✔", "green"), Status.FAIL: ("✘", "bold red"), Status.WARN: ("!", "yellow"),
    Status.SKIP: ("–", "dim"), Status.BLOCKED: ("■", "magenta"), Status.ERROR: ("‼", "bold magenta"),
    Status.NOT_RUN: ("·", "dim"),
}


PIPE_WIDTH = 120  # columns when writing to a file, a pipe or a CI log (rich would use 80)


def console(stderr: bool = False, **options) -> Console:
    """A rich console; PIPE_WIDTH wide when the stream is not a terminal and COLUMNS is not set."""
    import os

    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=PIPE_WIDTH if wide else None, **options)


def verdict_text(status: Status) -> Text:
    glyph, style = STYLE[status]
    return Text(f"{glyph} {status.value}", style=style)


class RunDisplay:
    """Consumes runner events; progress goes to stderr, the answer to stdout."""

    def __init__(self, out: Console | None = None, err: Console | None = None):
        self.out = out or console()
        self.err = err or console(stderr=True, highlight=False)
        self._status = None

    def on_event(self, event: Event) -> None:
        if isinstance(event, RungStarted):
            self._start_status(f"[{event.position}/{event.total}] {event.rung.id}: {event.rung.title}")
        elif isinstance(event, RungProgress):
            fraction = f" {event.fraction:.0%}" if event.fraction is not None else ""
            self._start_status(f"{event.rung.id}: {event.message}{fraction}")
        elif isinstance(event, RungFinished):
            self._stop_status()
            result = event.result
            if result.status in (Status.BLOCKED, Status.NOT_RUN):
                return
            line = Text.assemble(verdict_text(result.status), " ", (result.id, "bold"),
                                 f"  {result.summary}", (f"  {result.seconds:.1f}s", "dim"))
            self.err.print(line)
        elif isinstance(event, RunFinished):
            self._stop_status()

    def _start_status(self, message: str) -> None:
        if not self.err.is_terminal:
            return
        message = Text(message)  # rung text may hold brackets ("[/INST]"): never markup
        if self._status is None:
            self._status = self.err.status(message)
            self._status.start()
        else:
            self._status.update(message)

    def _stop_status(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def _side_by_side(self, sample) -> None:
        """The culprit's side-by-side evidence (the first sample) as two columns, when it has one."""
        from ladder.report.sides import humanise, pair_sides

        if isinstance(sample, list):
            sample = sample[0] if sample and isinstance(sample[0], dict) else None
        paired = pair_sides(sample) if isinstance(sample, dict) else None
        if paired is None:
            return
        shared, (left, right), rows = paired
        for key, value in shared:
            self.out.print(Text.assemble((f"{humanise(key)}: ", "bold"), str(value)))
        table = Table(title="side by side", title_justify="left", show_lines=True)
        for name in ("", left, right):
            table.add_column(Text(name), overflow="fold")
        for left_cell, right_cell in rows:
            label = " / ".join(dict.fromkeys(cell[0] for cell in (left_cell, right_cell) if cell and cell[0]))
            table.add_row(Text(label, style="dim"), *(Text("" if cell is None else str(cell[1]))
                                                      for cell in (left_cell, right_cell)))
        self.out.print(table)

    def summary(self, report: Report, ladder_) -> None:
        table = Table(title=Text(f"ladder {ladder_.name}"), title_justify="left")
        for column, kwargs in (("#", {"justify": "right"}), ("rung", {}), ("tier", {}), ("verdict", {}),
                               ("summary", {"overflow": "fold"}), ("s", {"justify": "right"})):
            table.add_column(column, **kwargs)
        for i, rung in enumerate(report.rungs, 1):
            table.add_row(Text(str(i)), Text(rung.id), Text(rung.tier.value), verdict_text(rung.status),
                          Text(rung.summary), Text(f"{rung.seconds:.1f}"))
        self.out.print(table)
        if report.culprit:
            self.out.print(Text.assemble(("Culprit: ", "bold red"), (report.culprit.rung, "bold"),
                                         f" — {report.culprit.summary}"))
            if report.culprit.fix:
                self.out.print(Text.assemble(("Fix: ", "bold"), report.culprit.fix))
            culprit = next((r for r in report.rungs if r.id == report.culprit.rung), None)
            if culprit is not None:
                self._side_by_side(culprit.evidence.get("side_by_side"))
        elif report.interrupted:
            self.out.print(Text("Interrupted: the report is partial.", style="yellow"))
        elif not report.complete:
            self.out.print(Text("No culprit found, but a probe error left the answer incomplete.",
                                style="bold magenta"))
        else:
            self.out.print(Text("No culprit found on the rungs that could run.", style="green"))
        sys.stdout.flush()
