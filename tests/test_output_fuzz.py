"""Nothing a harness, a model or a data file wrote can crash the output: the terminal table, the three
reports and the TUI's evidence show any text as text (markup-like brackets, control characters,
very long or empty strings, non-string values), and the reports are always written."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.control import strip_control_codes
from rich.console import Console

from helpers import engine_registry, run_cli, write
from test_cli import plugin_env
from ladder.cli_output import RunDisplay
from ladder.events import RungFinished, RungProgress, RungStarted
from ladder.models import Culprit, Report, Rung, RungResult, Status, Tier
from ladder.report.writers import write_report

MARKUP_LIKE = ["[/INST]", "[INST] hi [/INST]", "[bold]x[/bold]", "[/]", "[link=file:///etc]x", "[red", "\\[x]",
               "<|im_start|>user\n", "\x1b[31mred\x1b[0m", "\r\n\t\x00\x07", "{{ x }}", "%s %d", "💥" * 3]
texts = st.one_of(
    st.text(),  # any unicode, control characters included
    st.sampled_from(MARKUP_LIKE),
    st.lists(st.sampled_from(MARKUP_LIKE + ["a", " ", "\n"]), max_size=12).map("".join),
    st.text(min_size=2000, max_size=6000),
)
values = st.one_of(texts, st.none(), st.integers(), st.floats(), st.lists(texts, max_size=3),
                   st.dictionaries(texts, texts, max_size=3))
RUNG = Rung(id="prompt-format", title="the harness sends [INST] text", tier=Tier.INTERFACE, probe="echo-text",
            why="w", fix="f")


class NamedLadder:
    name = "fuzz [/INST]"


def report_of(text: str, value) -> Report:
    evidence = {"side_by_side": {"prompt": text, "harness_sent": text, "template_sends": value,
                                 "harness_answer": value, "template_answer": text},
                "samples": [{"reply": text, "other": value}], text[:40] or "empty": value}
    failed = RungResult(id=RUNG.id, tier=Tier.INTERFACE, title=RUNG.title, status=Status.FAIL, summary=text,
                        evidence=evidence, fix=text)
    warned = RungResult(id="special-tokens", tier=Tier.INTERFACE, title=text, status=Status.WARN, summary=text,
                        evidence={"value": value})
    return Report(culprit=Culprit(rung=RUNG.id, summary=text, fix=text), rungs=[failed, warned],
                  case={"harness": text}, versions={"ladder": "0"}, ladder="fuzz")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts, value=values)
def test_table_and_reports_take_any_text(tmp_path_factory, text, value):
    report = report_of(text, value)
    out = io.StringIO()
    display = RunDisplay(out=Console(file=out, width=100), err=Console(file=io.StringIO(), width=100))
    display.on_event(RungStarted(RUNG, 1, 2))
    display.on_event(RungProgress(RUNG, text, 0.5))
    display.on_event(RungFinished(RUNG, report.rungs[0]))
    display.summary(report, NamedLadder())
    shown = strip_control_codes(text)  # the control codes rich drops from what it prints (BEL, BS, VT, FF, CR)
    if shown.strip() and "\x1b" not in text and "\r" not in text:
        assert shown.split()[0][:10] in out.getvalue().replace("\n", "")  # shown, not swallowed as markup
    folder = tmp_path_factory.mktemp("reports")
    for kind in ("json", "junit", "md"):
        write_report(report, kind, folder / f"r.{kind}")
    assert json.loads((folder / "r.json").read_text(encoding="utf-8"))["culprit"]["rung"] == RUNG.id
    ET.parse(folder / "r.junit")  # readable XML whatever the text held
    assert (folder / "r.md").read_text(encoding="utf-8").startswith("## ladder report")


@settings(max_examples=15, deadline=None)
@given(text=texts, value=values)
def test_tui_evidence_takes_any_text(text, value):
    from textual.app import App, ComposeResult
    from textual.containers import VerticalScroll

    from ladder.tui.widgets.evidence import evidence_widgets

    evidence = report_of(text, value).rungs[0].evidence

    class EvidenceApp(App):
        def compose(self) -> ComposeResult:
            with VerticalScroll():
                yield from evidence_widgets(evidence)

    async def render() -> None:
        app = EvidenceApp()
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            app.export_screenshot()  # every widget rendered

    asyncio.run(render())


def test_cli_with_markup_in_a_finding_writes_every_report_and_prints_it(tmp_path):
    """The real CLI, a rung whose finding carries Llama-2 style text: no traceback, the reports on disk."""
    site = tmp_path / "site"
    dist = site / "fuzz_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fuzz-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ladder.probes]\necho-text = engine_probes:EchoText\n")
    shutil.copy(Path(__file__).parent / "engine_probes.py", site / "engine_probes.py")
    ladder = write(tmp_path / "l.yaml", """
        name: markup
        rungs:
          - id: prompt-format
            title: the harness format
            tier: interface
            probe: echo-text
            params: {text: "<s>[INST] What is 2 plus 3? [/INST] [bold]5[/] \\x1b[31m"}
            why: w
            fix: "wrap it in [INST] ... [/INST]"
        """)
    result = run_cli("probe", "--ladder", str(ladder), "--json", "r.json", "--junit", "r.xml", "--md", "r.md",
                     cwd=tmp_path, env=plugin_env(site))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "[/INST]" in result.stdout and "[INST] ... [/INST]" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["culprit"]["rung"] == "prompt-format" and "[/INST]" in report["culprit"]["summary"]
    ET.parse(tmp_path / "r.xml")
    assert "[/INST]" in (tmp_path / "r.md").read_text()


def test_a_table_that_cannot_be_printed_still_leaves_every_report_and_exits_3(tmp_path, monkeypatch, capsys):
    from ladder import cli
    from ladder.cli_output import RunDisplay

    target = tmp_path / "empty.txt"
    target.write_text("")
    ladder = write(tmp_path / "l.yaml", f"""
        name: broken-terminal
        rungs:
          - id: first
            title: the file is empty
            tier: interface
            probe: file-check
            params: {{path: {target}}}
            why: w
            fix: f
        """)

    def refuse(self, report, ladder_):
        raise UnicodeEncodeError("ascii", "✘", 0, 1, "a terminal that cannot print it")

    monkeypatch.setattr(RunDisplay, "summary", refuse)
    monkeypatch.setattr(cli, "_registry", lambda args: engine_registry())
    code = cli.main(["probe", "--ladder", str(ladder), "--json", str(tmp_path / "r.json"),
                     "--junit", str(tmp_path / "r.xml"), "--md", str(tmp_path / "r.md")])
    assert code == 3
    assert json.loads((tmp_path / "r.json").read_text())["culprit"]["rung"] == "first"
    assert (tmp_path / "r.xml").exists() and (tmp_path / "r.md").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ladder: the terminal table could not be printed (UnicodeEncodeError")
