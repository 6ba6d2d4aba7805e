"""Write a report as JSON, JUnit XML or Markdown."""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from ladder.models import Report, Status
from ladder.report import redact

GLYPH = {"pass": "✅", "fail": "❌", "warn": "⚠️", "skip": "⏭️", "blocked": "⛔", "error": "💥", "not-run": "·"}


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def report_dict(report: Report) -> dict[str, Any]:
    return _finite(redact(report.to_json_dict()))


def to_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2, ensure_ascii=False) + "\n"


_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def _xml_safe(value: Any) -> Any:
    """Strings with the characters XML 1.0 cannot hold (control characters, lone surrogates) written as
    `\\xNN` escapes, so text a harness or model produced never makes the JUnit file unreadable."""
    if isinstance(value, str):
        return _XML_ILLEGAL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    if isinstance(value, dict):
        return {k: _xml_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_xml_safe(v) for v in value]
    return value


def to_junit(report: Report) -> str:
    data = _xml_safe(report_dict(report))
    rungs = data["rungs"]
    counts = {s: sum(r["status"] == s for r in rungs) for s in ("fail", "error")}
    skipped = sum(r["status"] in ("skip", "blocked", "not-run") for r in rungs)
    suite = ET.Element("testsuite", name=f"ladder.{data.get('ladder') or 'ladder'}", tests=str(len(rungs)),
                       failures=str(counts["fail"]), errors=str(counts["error"]), skipped=str(skipped),
                       time=f"{sum(r['seconds'] for r in rungs):.3f}")
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="ladder.complete", value=str(bool(data.get("complete"))).lower())
    if data.get("interrupted"):
        ET.SubElement(properties, "property", name="ladder.interrupted", value="true")
    for key, value in (data.get("case") or {}).items():
        if key != "prompts":
            ET.SubElement(properties, "property", name=f"case.{key}", value=str(value))
    for key, value in data["versions"].items():
        ET.SubElement(properties, "property", name=f"version.{key}", value=value)
    for rung in rungs:
        case = ET.SubElement(suite, "testcase", classname=f"ladder.{rung['tier']}", name=rung["id"],
                             time=f"{rung['seconds']:.3f}")
        status = rung["status"]
        if status == "fail":
            node = ET.SubElement(case, "failure", message=rung["summary"], type="culprit")
            node.text = json.dumps(rung["evidence"], indent=2, ensure_ascii=False) + (
                f"\n\nfix: {rung['fix']}" if rung.get("fix") else "")
        elif status == "error":
            node = ET.SubElement(case, "error", message=rung["summary"], type="probe-error")
            node.text = rung.get("traceback") or rung["summary"]
        elif status in ("skip", "blocked", "not-run"):
            summary = rung["summary"]
            ET.SubElement(case, "skipped", message=summary if summary.startswith(status) else f"{status}: {summary}")
        elif status == "warn":
            out = ET.SubElement(case, "system-out")
            out.text = f"warn: {rung['summary']}"
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: Report) -> str:
    data = report_dict(report)
    lines = [f"## ladder report: `{data.get('ladder')}`", ""]
    if data.get("interrupted"):
        lines += ["**Interrupted:** the walk was stopped before it finished; this report is incomplete.", ""]
    culprit = data.get("culprit")
    if culprit:
        lines += [f"**Culprit: `{culprit['rung']}`** — {culprit['summary']}", ""]
        if culprit.get("fix"):
            lines += [f"**Fix:** {culprit['fix']}", ""]
    else:
        lines += ["**No culprit found.**" if data.get("complete") else
                  "**No culprit found, but the answer is incomplete (see errors).**", ""]
    lines += ["| # | rung | tier | verdict | summary | s |", "|---|---|---|---|---|---|"]
    for i, rung in enumerate(data["rungs"], 1):
        lines.append(f"| {i} | `{rung['id']}` | {rung['tier']} | {GLYPH.get(rung['status'], '')} "
                     f"{rung['status']} | {_md_cell(rung['summary'])} | {rung['seconds']:.2f} |")
    detailed = [r for r in data["rungs"] if r["status"] in ("fail", "warn", "error") and
                (r["evidence"] or r.get("traceback"))]
    for rung in detailed:
        lines += ["", f"<details><summary><code>{rung['id']}</code>: {rung['status']}</summary>", "",
                  "```json", json.dumps(rung["evidence"], indent=2, ensure_ascii=False)[:20000], "```"]
        if rung.get("traceback"):
            lines += ["", "```", rung["traceback"], "```"]
        lines += ["", "</details>"]
    case = data.get("case") or {}
    if case:
        lines += ["", "Case: " + ", ".join(f"`{k}`={v}" for k, v in case.items() if k != "prompts")]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items()), ""]
    return "\n".join(lines)


def to_html(report: Report) -> str:
    from ladder.report.html import to_html as html_page

    return html_page(report)


WRITERS = {"json": to_json, "junit": to_junit, "md": to_markdown, "html": to_html}


def write_report(report: Report, kind: str, path: Path) -> None:
    """Write the report whole or not at all (`write_whole`)."""
    write_whole(path, WRITERS[kind](report))


def write_whole(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all: into a temporary file beside it, then renamed over it."""
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", errors="backslashreplace") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


__all__ = ["to_html", "to_json", "to_junit", "to_markdown", "write_report", "write_whole", "report_dict", "Status"]
