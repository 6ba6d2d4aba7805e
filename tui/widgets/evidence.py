"""Evidence as a person would rather look than read.

Rendered generically from a finding's evidence dict, by shape, never by rung:
- a dict named `side_by_side` (or a list of them) whose keys pair up by prefix
  (`harness_sent` / `template_sends`, `harness_answer` / `template_answer`) shows as
  two columns, row by row, with the unpaired keys (`prompt`) above;
- `series: {name: [floats]}` with `flagged: [indices]` (or `{name: [indices]}`) is
  plotted, the flagged indices in red with a marker under them;
- a list of dicts, or a dict of dicts (`metrics: {metric: {harness: x, template: y}}`,
  config keys intended vs effective) is a table;
- scalars and short lists are a key / value list; long text is a block.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Label, Static

from ladder.report.sides import as_number, humanise, pair_sides

BLOCKS = " ▁▂▃▄▅▆▇█"
SHORT_TEXT = 80
CELL_WIDTH = 48  # a table cell longer than this is cut (the JSON export keeps it whole)


# ---- values as text -------------------------------------------------------------------------


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def fmt(value: Any) -> str:
    """A value in few characters: floats to 4 significant digits, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and all(is_scalar(v) for v in value):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def visible(text: str) -> Text:
    """Text exactly as sent, line breaks marked (never read as markup)."""
    out = Text()
    lines = text.split("\n")
    for i, line in enumerate(lines):
        out.append(line)
        if i < len(lines) - 1:
            out.append("↵", style="dim")
            out.append("\n")
    return out


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


# ---- side by side ---------------------------------------------------------------------------


class SideBySide(Vertical):
    """Two columns, row by row: what one side did next to what the other did."""

    def __init__(self, sample: dict[str, Any], **kwargs) -> None:
        super().__init__(**kwargs)
        self.sample = sample

    def compose(self) -> ComposeResult:
        paired = pair_sides(self.sample)
        if paired is None:
            yield from scalar_block(self.sample)
            return
        shared, (left, right), rows = paired
        for key, value in shared:
            yield Label(humanise(key), classes="cell-label shared-label")
            yield Static(visible(fmt(value) if not isinstance(value, str) else value), classes="cell-text shared")
        with Horizontal(classes="sides-head"):  # the sides' names head the two columns
            yield Label(Text(humanise(left), style="bold"), classes="side-name")
            yield Label(Text(humanise(right), style="bold"), classes="side-name")
        for left_cell, right_cell in rows:
            with Horizontal(classes="sides-row"):
                for cell in (left_cell, right_cell):
                    with Vertical(classes="side-cell"):
                        if cell is not None:
                            label, value = cell
                            if label:
                                yield Label(label, classes="cell-label")
                            text = value if isinstance(value, str) else fmt(value)
                            yield Static(visible(text), classes="cell-text")


# ---- series ---------------------------------------------------------------------------------


def bucketed(values: list[float], flagged: set[int], columns: int) -> list[tuple[float, bool, int]]:
    """(value, flagged, first index) per column: one column per index when they fit, else the
    largest value of each bucket (a NaN wins: it is what a person must see)."""
    n = len(values)
    if n <= columns:
        return [(v, i in flagged, i) for i, v in enumerate(values)]
    out = []
    for b in range(columns):
        start, stop = b * n // columns, max((b + 1) * n // columns, b * n // columns + 1)
        chunk = values[start:stop]
        bad = [v for v in chunk if not math.isfinite(v)]
        value = bad[0] if bad else max(chunk)
        out.append((value, any(i in flagged for i in range(start, stop)), start))
    return out


class SeriesPlot(Widget):
    """A per-layer / per-head / per-step series as bars, flagged indices red and marked ▲."""

    DEFAULT_CSS = "SeriesPlot { height: 6; }"
    PLOT_ROWS = 4

    def __init__(self, values: Iterable[Any], flagged: Iterable[int] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.values = [as_number(v) for v in values]
        self.flagged = {int(i) for i in flagged if isinstance(i, (int, float))}

    def render(self) -> Text:
        finite = [v for v in self.values if math.isfinite(v)]
        if not self.values:
            return Text("no values", style="dim")
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
        top, bottom = fmt(hi), fmt(lo)
        gutter = max(len(top), len(bottom)) + 1
        width = max(self.size.width - gutter, 1)
        n = len(self.values)
        cell = max(1, min(3, width // n)) if n <= width else 1
        columns = bucketed(self.values, self.flagged, width if n > width else n)
        levels = self.PLOT_ROWS * 8
        heights = []
        for value, _, _ in columns:
            if not math.isfinite(value):
                heights.append(None)
            elif hi == lo:
                heights.append(levels // 2)
            else:
                heights.append(1 + round((value - lo) / (hi - lo) * (levels - 1)))
        bar = max(cell - 1, 1) if cell > 1 else 1
        out = Text(no_wrap=True, overflow="crop")
        for row in range(self.PLOT_ROWS):
            label = top if row == 0 else bottom if row == self.PLOT_ROWS - 1 else ""
            out.append(label.rjust(gutter - 1) + " ", style="dim")
            base = (self.PLOT_ROWS - 1 - row) * 8
            for (value, flag, _), height in zip(columns, heights):
                style = "bold red" if flag or height is None else "cyan"
                if height is None:
                    char = "×" if row == 0 else " "
                else:
                    char = BLOCKS[min(max(height - base, 0), 8)]
                out.append(char * bar, style=style)
                out.append(" " * (cell - bar))
            out.append("\n")
        out.append(" " * gutter)
        for value, flag, _ in columns:
            out.append(("▲" if flag or not math.isfinite(value) else " ") + " " * (cell - 1), style="bold red")
        out.append("\n")
        span = len(columns) * cell
        last = str(n - 1)
        out.append(" " * gutter + "0".ljust(max(span - len(last), 1)) + last, style="dim")
        return out


def series_widgets(series: dict[str, Any], flagged: Any, index: str | None = None) -> list[Widget]:
    widgets: list[Widget] = []
    if index:
        widgets.append(Static(Text.assemble(("index: ", "dim"), index), classes="series-index"))
    for name, values in series.items():
        if not isinstance(values, (list, tuple)):
            widgets.append(Static(Text(f"{name}: {fmt(values)}")))
            continue
        marks = flagged.get(name, []) if isinstance(flagged, dict) else (flagged or [])
        numbers = [as_number(v) for v in values]
        finite = [v for v in numbers if math.isfinite(v)]
        caption = Text.assemble((humanise(name), "bold"), f"  {len(numbers)} values",
                                f", min {fmt(min(finite))}, max {fmt(max(finite))}" if finite else "")
        marked = sorted({int(i) for i in marks if isinstance(i, (int, float)) and 0 <= i < len(numbers)})
        if marked:
            caption.append(f"  flagged: {', '.join(map(str, marked))}", style="bold red")
        widgets.append(Static(caption, classes="series-caption"))
        widgets.append(SeriesPlot(numbers, marked, classes="series-plot"))
    return widgets


# ---- tables ---------------------------------------------------------------------------------


def is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def is_dict_of_dicts(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, dict) for v in value.values())


class EvidenceTable(DataTable):
    """A read-only table of evidence rows."""

    def __init__(self, columns: list[str], rows: list[list[Any]], **kwargs) -> None:
        super().__init__(show_cursor=False, zebra_stripes=True, **kwargs)
        self._columns, self._rows = columns, rows

    def on_mount(self) -> None:
        self.add_columns(*[Text(c, style="bold") for c in self._columns])
        for row in self._rows:
            self.add_row(*[Text(clip(fmt(v).replace("\n", "↵ "), CELL_WIDTH)) for v in row])


def table_for(key: str, value: Any) -> EvidenceTable:
    if is_records(value):
        columns: list[str] = []
        for record in value:
            columns += [k for k in record if k not in columns]
        return EvidenceTable(columns, [[r.get(c) for c in columns] for r in value], classes="evidence-table")
    columns = []
    for inner in value.values():
        columns += [k for k in inner if k not in columns]
    rows = [[outer, *[inner.get(c) for c in columns]] for outer, inner in value.items()]
    return EvidenceTable([humanise(key), *columns], rows, classes="evidence-table")


# ---- the rest -------------------------------------------------------------------------------


def scalar_block(items: dict[str, Any], classes: str = "key-values") -> list[Widget]:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in items.items():
        grid.add_row(Text(humanise(key)), visible(value) if isinstance(value, str) else Text(fmt(value)))
    return [Static(grid, classes=classes)]


def _rank(key: str, value: Any) -> int:
    """What a person looks at first: samples side by side and plots, then tables, then the rest."""
    if key in ("side_by_side", "series"):
        return 0
    if is_records(value) or is_dict_of_dicts(value):
        return 1
    return 2


def evidence_widgets(evidence: dict[str, Any]) -> list[Widget]:
    """The widgets showing one finding's evidence: the pictures first (side by side, plots), then the
    scalars as a key / value list, the tables, and the rest in the order the probe wrote them."""
    scalars: dict[str, Any] = {}
    blocks: list[tuple[str, Any]] = []
    has_series = isinstance(evidence.get("series"), dict)
    for key, value in evidence.items():
        if key in ("flagged", "series_index") and has_series:
            continue
        short_list = isinstance(value, list) and all(is_scalar(v) for v in value) and len(fmt(value)) <= SHORT_TEXT
        if (is_scalar(value) and not (isinstance(value, str) and ("\n" in value or len(value) > SHORT_TEXT))) \
                or short_list:
            scalars[key] = value
        else:
            blocks.append((key, value))
    blocks.sort(key=lambda item: _rank(*item))
    pictures = [block for block in blocks if _rank(*block) == 0]
    widgets: list[Widget] = []
    for index, (key, value) in enumerate(blocks):
        if index == len(pictures) and scalars:
            widgets.extend(scalar_block(scalars, "key-values top-values"))
        widgets.append(Label(Text(humanise(key), style="bold"), classes="evidence-heading"))
        if key == "side_by_side" and (isinstance(value, dict) or is_records(value)):
            samples = [value] if isinstance(value, dict) else value
            widgets.extend(SideBySide(sample, classes="side-by-side") for sample in samples)
        elif key == "series" and isinstance(value, dict):
            index = evidence.get("series_index")
            widgets.extend(series_widgets(value, evidence.get("flagged"), index if isinstance(index, str) else None))
        elif is_records(value) or is_dict_of_dicts(value):
            widgets.append(table_for(key, value))
        elif isinstance(value, dict):
            widgets.extend(scalar_block(value))
        elif isinstance(value, str):
            widgets.append(Static(visible(value), classes="text-block"))
        elif isinstance(value, list) and all(is_scalar(v) for v in value):
            widgets.append(Static(Text("\n".join(f"• {fmt(v)}" for v in value)), classes="bullets"))
        else:
            widgets.append(Static(Text(json.dumps(value, indent=2, ensure_ascii=False, default=str)),
                                  classes="text-block"))
    if len(blocks) == len(pictures) and scalars:
        widgets.extend(scalar_block(scalars, "key-values top-values"))
    return widgets
