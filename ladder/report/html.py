"""The HTML report: one self-contained page (no network, no CDN) to look at rather than read.

The culprit and its fix first, then its side-by-side evidence in two columns, then every rung with its
verdict; each rung's evidence is rendered by shape, never by rung, as the TUI does: a `side_by_side` dict
as two columns, `series: {name: [numbers]}` (with `flagged` indices) as inline SVG line plots, a dict of
dicts (`metrics`) as a table, the rest as JSON. A tiny inline script records each plot's rendered size on
the page (`data-rendered`), so a headless browser's DOM shows that the plots were laid out. `sweep_html`
draws a sweep's matrix with a coloured cell per verdict.
"""

from __future__ import annotations

import json
import math
from html import escape
from typing import Any

from ladder.report.sides import as_number, humanise, pair_sides

COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "warn": "#9a6700", "skip": "#6e7781", "error": "#8250df",
           "blocked": "#57606a", "not-run": "#8c959f"}

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1f2328;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em}
.culprit{border:2px solid #cf222e;border-radius:8px;padding:1em 1.2em;background:#fff5f5}
.none{border:2px solid #1a7f37;border-radius:8px;padding:1em 1.2em;background:#f4fff6}
.fix{white-space:pre-wrap;margin-top:.6em}
table{border-collapse:collapse;width:100%;margin:.6em 0}td,th{border:1px solid #d0d7de;padding:4px 8px;
vertical-align:top;text-align:left}th{background:#f6f8fa}
.badge{color:#fff;border-radius:4px;padding:1px 7px;font-weight:600;white-space:nowrap}
.sides td{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:12px;width:45%}
.sides td.label{width:10%;color:#57606a;font-family:inherit}
pre{background:#f6f8fa;padding:.6em;overflow:auto;font-size:12px;max-height:24em}
figure{margin:.8em 0}figcaption{font-size:12px;color:#57606a}
.cell{color:#fff;text-align:center;font-weight:600}
"""

SCRIPT = """
window.addEventListener('load', function () {
  document.querySelectorAll('svg.plot').forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    svg.setAttribute('data-rendered', Math.round(box.width) + 'x' + Math.round(box.height));
  });
  document.querySelectorAll('[data-check]').forEach(function (node) {
    node.setAttribute('data-rendered', node.offsetWidth + 'x' + node.offsetHeight);
  });
});
"""


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}<script>{SCRIPT}</script></body></html>\n")


def _badge(status: str) -> str:
    return f"<span class='badge' style='background:{COLOURS.get(status, '#57606a')}'>{escape(status)}</span>"


def _text(value: Any) -> str:
    return escape(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str))


def side_by_side(sample: Any) -> str:
    """Two columns, row by row (the shared rows above); '' when the dict does not pair up."""
    if isinstance(sample, list):
        sample = sample[0] if sample and isinstance(sample[0], dict) else None
    paired = pair_sides(sample) if isinstance(sample, dict) else None
    if paired is None:
        return ""
    shared, (left, right), rows = paired
    out = ["<table class='sides' data-check='side-by-side'>"]
    out += [f"<tr><td class='label'>{escape(humanise(k))}</td><td colspan='2'>{_text(v)}</td></tr>"
            for k, v in shared]
    out.append(f"<tr><th></th><th>{escape(humanise(left))}</th><th>{escape(humanise(right))}</th></tr>")
    for left_cell, right_cell in rows:
        label = " / ".join(dict.fromkeys(cell[0] for cell in (left_cell, right_cell) if cell and cell[0]))
        cells = "".join(f"<td>{'' if cell is None else _text(cell[1])}</td>" for cell in (left_cell, right_cell))
        out.append(f"<tr><td class='label'>{escape(label)}</td>{cells}</tr>")
    out.append("</table>")
    return "".join(out)


def plot(name: str, values: list[Any], flagged: list[int], width: int = 640, height: int = 150) -> str:
    """One series as an inline SVG line plot: flagged indices as red dots, non-finite values as red marks."""
    numbers = [as_number(v) for v in values]
    finite = [v for v in numbers if math.isfinite(v)]
    pad = 28
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    span = (high - low) or 1.0

    def x(i: int) -> float:
        return pad + (width - 2 * pad) * (i / max(1, len(numbers) - 1))

    def y(v: float) -> float:
        return height - pad - (height - 2 * pad) * ((v - low) / span)

    points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(numbers) if math.isfinite(v))
    parts = [f"<svg class='plot' data-series='{escape(name)}' width='{width}' height='{height}' "
             f"viewBox='0 0 {width} {height}' xmlns='http://www.w3.org/2000/svg' role='img'>",
             f"<rect x='0' y='0' width='{width}' height='{height}' fill='#fbfcfd' stroke='#d0d7de'/>",
             f"<polyline fill='none' stroke='#0969da' stroke-width='2' points='{points}'/>"]
    for i in flagged:
        if 0 <= i < len(numbers) and math.isfinite(numbers[i]):
            parts.append(f"<circle cx='{x(i):.1f}' cy='{y(numbers[i]):.1f}' r='4' fill='#cf222e'/>")
    for i, v in enumerate(numbers):
        if not math.isfinite(v):
            parts.append(f"<text x='{x(i):.1f}' y='{pad - 8}' fill='#cf222e' font-size='12' "
                         f"text-anchor='middle'>×</text>")
    parts.append(f"<text x='4' y='{pad - 12}' font-size='11' fill='#57606a'>{escape(f'{high:.4g}')}</text>")
    parts.append(f"<text x='4' y='{height - 8}' font-size='11' fill='#57606a'>{escape(f'{low:.4g}')}"
                 f"  (index 0 to {len(numbers) - 1})</text></svg>")
    caption = f"{humanise(name)}: {len(numbers)} values" + (f", flagged {flagged}" if flagged else "")
    return f"<figure>{''.join(parts)}<figcaption>{escape(caption)}</figcaption></figure>"


def series_plots(evidence: dict[str, Any]) -> str:
    series = evidence.get("series")
    if not isinstance(series, dict):
        return ""
    flagged = evidence.get("flagged")
    out = []
    for name, values in series.items():
        if not isinstance(values, (list, tuple)) or not values:
            continue
        marks = flagged.get(name, []) if isinstance(flagged, dict) else (flagged or [])
        out.append(plot(name, list(values), [int(i) for i in marks if isinstance(i, (int, float))]))
    return "".join(out)


def _tables(evidence: dict[str, Any]) -> str:
    """Dicts of dicts (`metrics: {metric: {harness: x, template: y}}`) as tables."""
    out = []
    for key, value in evidence.items():
        if not isinstance(value, dict) or not value:
            continue
        rows = list(value.items())
        if not all(isinstance(v, dict) for _, v in rows):
            continue
        columns = list(dict.fromkeys(c for _, v in rows for c in v))
        head = "".join(f"<th>{escape(humanise(str(c)))}</th>" for c in columns)
        body = "".join(f"<tr><td>{escape(str(k))}</td>" + "".join(f"<td>{_text(v.get(c))}</td>" for c in columns)
                       + "</tr>" for k, v in rows)
        out.append(f"<h4>{escape(humanise(key))}</h4><table><tr><th></th>{head}</tr>{body}</table>")
    return "".join(out)


def to_html(report) -> str:
    data = report.to_json_dict()
    culprit = data.get("culprit")
    rungs = data.get("rungs", [])
    parts = [f"<h1>ladder {escape(str(data.get('ladder') or ''))}</h1>"]
    if culprit:
        rung = next((r for r in rungs if r["id"] == culprit["rung"]), {})
        parts.append(f"<section class='culprit' data-check='culprit'><h2>Culprit: {escape(culprit['rung'])}</h2>"
                     f"<div>{escape(culprit['summary'])}</div>"
                     + (f"<div class='fix'><b>Fix:</b> {escape(culprit['fix'])}</div>" if culprit.get("fix") else "")
                     + side_by_side(rung.get("evidence", {}).get("side_by_side")) + "</section>")
    else:
        words = "Interrupted: the report is partial." if data.get("interrupted") else (
            "No culprit found on the rungs that could run." if data.get("complete", True)
            else "No culprit found, but a probe error left the answer incomplete.")
        parts.append(f"<section class='none' data-check='culprit'><h2>{escape(words)}</h2></section>")
    parts.append("<h2>Rungs</h2><table><tr><th>#</th><th>rung</th><th>tier</th><th>verdict</th><th>summary</th>"
                 "<th>s</th></tr>")
    for i, r in enumerate(rungs, 1):
        parts.append(f"<tr><td>{i}</td><td><a href='#{escape(r['id'])}'>{escape(r['id'])}</a></td>"
                     f"<td>{escape(str(r['tier']))}</td><td>{_badge(r['status'])}</td><td>{escape(r['summary'])}</td>"
                     f"<td>{r['seconds']:.1f}</td></tr>")
    parts.append("</table><h2>Evidence</h2>")
    for r in rungs:
        evidence = r.get("evidence") or {}
        if not evidence and not r.get("traceback"):
            continue
        is_culprit = bool(culprit) and r["id"] == culprit["rung"]
        rest = {k: v for k, v in evidence.items() if k not in ("side_by_side", "series", "flagged")}
        parts.append(f"<details id='{escape(r['id'])}'{' open' if is_culprit or 'series' in evidence else ''}>"
                     f"<summary>{_badge(r['status'])} <b>{escape(r['id'])}</b>: {escape(r['summary'])}</summary>"
                     + (side_by_side(evidence.get("side_by_side")) if not is_culprit else "")
                     + series_plots(evidence) + _tables(rest)
                     + f"<pre>{escape(json.dumps(rest, indent=1, ensure_ascii=False, default=str))}</pre>"
                     + (f"<pre>{escape(r['traceback'])}</pre>" if r.get("traceback") else "") + "</details>")
    case = data.get("case") or {}
    parts.append(f"<h2>Case</h2><pre>{escape(json.dumps(case, indent=1, default=str))}</pre>")
    parts.append(f"<p style='color:#57606a'>{escape(json.dumps(data.get('versions') or {}))}</p>")
    return _page(f"ladder: {culprit['rung'] if culprit else 'no culprit'}", "".join(parts))


def sweep_html(sweep_dict: dict[str, Any]) -> str:
    """A sweep's matrix: a row per checkpoint, a coloured cell per rung's verdict, the turns below."""
    from pathlib import Path

    rungs = sweep_dict.get("rungs", [])
    rows = sweep_dict.get("rows", [])
    parts = [f"<h1>ladder sweep: {len(rows)} checkpoints</h1>",
             "<table data-check='matrix'><tr><th>checkpoint</th>"
             + "".join(f"<th>{escape(r)}</th>" for r in rungs) + "<th>culprit</th></tr>"]
    for row in rows:
        cells = "".join(f"<td class='cell' style='background:{COLOURS.get(row['verdicts'].get(r, ''), '#eaeef2')}'>"
                        f"{escape(row['verdicts'].get(r, ''))}</td>" for r in rungs)
        culprit = row.get("culprit") or (f"error: {row['error']}" if row.get("error") else "none")
        parts.append(f"<tr><td>{escape(Path(row['model']).name)}</td>{cells}<td>{escape(culprit)}</td></tr>")
    parts.append("</table>")
    turns = sweep_dict.get("turns") or {}
    if turns:
        parts.append("<h2>Where a rung turns from pass to fail</h2><ul>" + "".join(
            f"<li><b>{escape(rung)}</b>: fails from {escape(Path(t['failed']).name)} "
            f"(passed at {escape(Path(t['passed']).name)})</li>" for rung, t in turns.items()) + "</ul>")
    return _page("ladder sweep", "".join(parts))
