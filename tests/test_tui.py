"""`ladder tui`: pilot tests walking a small ladder of cheap real probes (files in tmp_path),
and the founding fixture case when the fixture factory provides it."""

from __future__ import annotations

import asyncio
import functools
import json
import time

import pytest

from helpers import write
from ladder.case import Case
from ladder.cli import build_parser
from ladder.errors import InputError
from ladder.loader import load_ladder
from ladder.models import Status
from ladder.report.writers import report_dict
from ladder.runner import Runner
from ladder.tui.app import LadderApp, build_app
from ladder.tui.screens.confirm import ConfirmScreen
from ladder.tui.screens.help import HelpScreen
from ladder.tui.screens.skip import SkipScreen
from ladder.tui.screens.start import StartScreen
from ladder.tui.widgets.evidence import (EvidenceTable, SeriesPlot, SideBySide, bucketed, evidence_widgets,
                                         pair_sides)
from ladder.tui.widgets.status import RUNNING
from tui_helpers import make_case, make_ladder, settle, tui_registry, wait_for, write_case_files

SIZE = (100, 34)


def pilot_test(test):
    """Run an async pilot test in its own event loop (no pytest async plugin needed)."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))
    return run


@pytest.fixture
def walk_case(tmp_path):
    """The test ladder on a case whose harness sends raw text (the `format` rung fails)."""
    write_case_files(tmp_path)
    registry = tui_registry()
    return make_ladder(tmp_path, registry), make_case(tmp_path), registry


def make_app(walk_case, tmp_path) -> LadderApp:
    ladder, case, registry = walk_case
    return LadderApp(ladder, case, registry, export_dir=tmp_path / "out")


def shown_states(app) -> dict[str, str]:
    """The state each rung shows in the ladder list."""
    return {rung_id: (s.value if isinstance(s, Status) else s) for rung_id, s in app.walk.ladder_list.states.items()}


def comparable(report: dict) -> dict:
    """A report without what differs between two runs of the same case (timings, versions)."""
    report = json.loads(json.dumps(report))
    report.pop("versions")
    for rung in report["rungs"]:
        rung.pop("seconds")
    return report


# ---- walking the test ladder ----------------------------------------------------------------------


@pilot_test
async def test_n_walks_to_the_culprit_then_asks_before_going_down(walk_case, tmp_path):
    app = make_app(walk_case, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        assert shown_states(app) == dict.fromkeys(app.walk.ladder.order, "not-run")
        await pilot.press("n")
        await settle(pilot)
        assert shown_states(app)["harness-file"] == "pass"
        assert app.walk.selected == "harness-file"  # the list follows the walk
        await pilot.press("n")
        await settle(pilot)
        assert shown_states(app) == {"harness-file": "pass", "format": "fail", "data-file": "not-run",
                                     "config-keys": "not-run", "seam": "blocked"}
        assert app.walk.selected == "format"
        await pilot.press("n")  # data-file is next, below a culprit: ask, and say why
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "format failed above it" in app.screen.reason and "press f" in app.screen.reason
        await pilot.press("n")  # go back: nothing ran
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert "data-file" not in app.walk.runner.results


@pilot_test
async def test_running_below_an_unverified_rung_asks_why_then_runs(walk_case, tmp_path):
    app = make_app(walk_case, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        app.walk.ladder_list.select_rung("config-keys")
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.reason.startswith("harness-file is not verified yet: Without the harness nothing")
        assert "2 more rungs above are not verified either" in app.screen.reason
        await pilot.press("y")
        await settle(pilot)
        assert app.walk.results["config-keys"].status is Status.PASS
        assert set(app.walk.runner.results) == {"config-keys"}


@pilot_test
async def test_blocked_rung_says_which_rung_blocks_it(walk_case, tmp_path):
    app = make_app(walk_case, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n", "n")
        await settle(pilot)
        await settle(pilot)
        app.walk.ladder_list.select_rung("seam")
        await pilot.pause()
        verdict = str(app.walk.query_one("#rung-verdict").render())
        assert "blocked" in verdict and "'format' failed" in verdict
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and "seam comes after format, which failed" in app.screen.reason


@pilot_test
async def test_fixed_it_reruns_the_rung_and_resets_everything_below(walk_case, tmp_path):
    app = make_app(walk_case, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("a")  # stops at the culprit, like `ladder probe`
        await settle(pilot)
        assert set(app.walk.results) == {"harness-file", "format"}
        app.walk.ladder_list.select_rung("data-file")
        await pilot.press("enter", "y")  # run one below the culprit anyway
        await settle(pilot)
        assert app.walk.results["data-file"].status is Status.PASS
        write_case_files(tmp_path, harness_fixed=True)  # the user fixes the harness
        app.walk.ladder_list.select_rung("format")
        builds_before = app.walk.runner.resources
        await pilot.press("f")
        await settle(pilot)
        assert app.walk.runner.resources is not builds_before  # reloaded: the fix on disk is seen
        assert app.walk.results["format"].status is Status.PASS
        assert set(app.walk.runner.results) == {"harness-file", "format"}  # data-file was reset
        assert shown_states(app) == {"harness-file": "pass", "format": "pass", "data-file": "not-run",
                                     "config-keys": "not-run", "seam": "not-run"}
        await pilot.press("a")
        await settle(pilot)
        assert shown_states(app) == {"harness-file": "pass", "format": "pass", "data-file": "pass",
                                     "config-keys": "pass", "seam": "pass"}
        await pilot.press("n")  # nothing left: says so, runs nothing
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)


@pilot_test
async def test_export_equals_what_probe_reports_for_the_same_case(walk_case, tmp_path):
    ladder, case, registry = walk_case
    app = make_app(walk_case, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n", "n")
        await settle(pilot)
        await settle(pilot)
        await pilot.press("e")
        await pilot.pause()
    exported = json.loads((tmp_path / "out" / "ladder-report.json").read_text(encoding="utf-8"))
    probed = report_dict(Runner(load_ladder(ladder.source, registry), case, registry=registry).run())
    assert comparable(exported) == comparable(probed)
    assert exported["culprit"]["rung"] == "format"
    assert [r["status"] for r in exported["rungs"]] == ["pass", "fail", "not-run", "not-run", "blocked"]
    markdown = (tmp_path / "out" / "ladder-report.md").read_text(encoding="utf-8")
    assert "**Culprit: `format`**" in markdown


@pilot_test
async def test_skip_takes_a_typed_reason_into_the_report(walk_case, tmp_path):
    app = make_app(walk_case, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, SkipScreen)
        await pilot.press("enter")  # no reason yet: refused
        await pilot.pause()
        assert isinstance(app.screen, SkipScreen)
        await pilot.press(*"no harness here", "enter")
        await pilot.pause()
        await pilot.pause()
        result = app.walk.results["harness-file"]
        assert result.status is Status.SKIP and result.summary == "skipped by the user: no harness here"
        assert app.walk.selected == "format"
        await pilot.press("n")  # a skip is a seen verdict: format runs without asking
        await settle(pilot)
        assert app.walk.results["format"].status is Status.FAIL
        await pilot.press("e")
        await pilot.pause()
    exported = json.loads((tmp_path / "out" / "ladder-report.json").read_text(encoding="utf-8"))
    assert exported["rungs"][0]["evidence"] == {"skipped_by": "user", "reason": "no harness here"}


# ---- long, cancelled and crashing rungs ---------------------------------------------------------------


def slow_ladder(tmp_path, registry, seconds: float = 20):
    return load_ladder(write(tmp_path / "slow.yaml", f"""
        name: slow
        rungs:
          - id: slow
            title: a long rung
            tier: interface
            probe: tui-file-present
            params: {{path: {tmp_path / 'harness.py'}, sleep: {seconds}}}
            why: It takes a while.
            fix: Wait.
          - id: after-slow
            title: the next rung
            tier: data
            probe: tui-file-present
            params: {{path: {tmp_path / 'harness.py'}}}
            why: It comes next.
            fix: Nothing.
        """), registry)


@pilot_test
async def test_long_rung_shows_progress_stays_responsive_and_cancels(tmp_path):
    write_case_files(tmp_path)
    registry = tui_registry()
    app = LadderApp(slow_ladder(tmp_path, registry), Case(), registry)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: app.walk.progress.get("slow", ("", None))[1] is not None)
        assert shown_states(app)["slow"] == RUNNING
        assert app.walk.query_one("#rung-progress").display
        assert "step" in str(app.walk.query_one("#rung-progress-message").render())
        await pilot.press("question_mark")  # the UI answers while the probe works
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("n")  # refused while busy: nothing queued
        await pilot.pause()
        assert isinstance(app.screen, type(app.walk))
        started = time.monotonic()
        await pilot.press("c")
        await settle(pilot)
        assert time.monotonic() - started < 5
        result = app.walk.results["slow"]
        assert result.status is Status.NOT_RUN and result.summary == "cancelled"
        assert not app.walk.query_one("#rung-progress").display
        await pilot.press("n")  # a cancelled rung has no verdict: it is still the next one
        await wait_for(pilot, lambda: app.walk.running == "slow")
        await pilot.press("escape")
        await settle(pilot)


@pilot_test
async def test_quit_asks_while_a_probe_runs(tmp_path):
    write_case_files(tmp_path)
    registry = tui_registry()
    app = LadderApp(slow_ladder(tmp_path, registry), Case(), registry)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await wait_for(pilot, lambda: app.walk.running == "slow")
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and "A probe is running (slow)" in app.screen.reason
        await pilot.press("n")
        await pilot.pause()
        assert app.walk.busy
        await pilot.press("q", "y")
        await pilot.pause()
        assert app.walk.cancel_event is None or app.walk.cancel_event.is_set()
    assert app.return_code == 0


@pilot_test
async def test_probe_error_shows_its_traceback_and_the_app_keeps_going(tmp_path):
    write_case_files(tmp_path)
    (tmp_path / "harness.py").unlink()  # the probe's stat() raises: an error, never a verdict
    registry = tui_registry()
    app = LadderApp(make_ladder(tmp_path, registry), make_case(tmp_path), registry)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("n")
        await settle(pilot)
        assert app.walk.results["harness-file"].status is Status.ERROR
        panel = app.walk.query_one("#rung-traceback")
        assert panel.display and "FileNotFoundError" in str(panel.render())
        await pilot.press("n")  # an error is not verified: asked, then it runs
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen) and "(its probe crashed)" in app.screen.reason
        await pilot.press("y")
        await settle(pilot)
        assert app.walk.results["format"].status is Status.FAIL
        assert not app.walk.query_one("#rung-traceback").display


@pilot_test
async def test_mouse_click_selects_a_rung_without_running_it(walk_case, tmp_path):
    app = make_app(walk_case, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#ladder", offset=(6, 4))  # line 4 of the list: data-file
        await pilot.pause()
        assert app.walk.selected == "data-file"
        assert "the training data is missing" in str(app.walk.query_one("#rung-hypothesis").render())
        assert not app.walk.results
        await pilot.click("#ladder", offset=(6, 0))  # a tier header is not a rung
        await pilot.pause()
        assert app.walk.selected == "data-file"
        await pilot.click("#ladder", offset=(6, 1), times=2)  # a double click runs the rung
        await settle(pilot)
        assert app.walk.results["harness-file"].status is Status.PASS


# ---- bad input ---------------------------------------------------------------------------------------


@pilot_test
async def test_bad_case_opens_the_start_screen_with_probes_messages(tmp_path, capsys):
    bad = write(tmp_path / "case.yaml", "modle: ./ckpt\nharness: nowhere.py:generate\n")
    args = build_parser().parse_args(["tui", str(bad)])
    with pytest.raises(InputError) as probe_error:
        from ladder.cli import cmd_probe
        cmd_probe(build_parser().parse_args(["probe", str(bad)]))
    app = build_app(args)
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.screen, StartScreen)
        lines = [str(w.render()) for w in app.screen.query(".start-problem")]
        assert lines == [f"ladder: error: {p}" for p in probe_error.value.problems]
        assert "unknown key 'modle' (did you mean 'model'?)" in lines[0]
        await pilot.press("q")
    assert app.return_code == 2


@pilot_test
async def test_bad_ladder_is_bad_input_too(tmp_path):
    args = build_parser().parse_args(["tui", "--ladder", str(tmp_path / "missing.yaml")])
    app = build_app(args)
    async with app.run_test(size=SIZE):
        assert isinstance(app.screen, StartScreen)
        assert "missing.yaml" in str(app.screen.query_one(".start-problem").render())


# ---- evidence shapes and the runner's additions ----------------------------------------------------


def test_side_by_side_pairs_keys_by_prefix_and_suffix():
    shared, sides, rows = pair_sides({"prompt": "2+3?", "harness_sent": "2+3?", "template_sends": "<s>2+3?",
                                      "harness_answer": "2+3=23", "template_answer": "5"})
    assert shared == [("prompt", "2+3?")] and sides == ("harness", "template")
    assert rows == [(("sent", "2+3?"), ("sends", "<s>2+3?")), (("answer", "2+3=23"), ("answer", "5"))]
    shared, sides, rows = pair_sides({"base_answer": "a", "tuned_answer": "b", "tuned_extra": "c"})
    assert sides == ("base", "tuned") and rows == [(("answer", "a"), ("answer", "b")), (None, ("extra", "c"))]
    assert pair_sides({"only": 1}) is None


def test_series_buckets_keep_flagged_indices_and_nan():
    values = [0.0] * 100
    values[57] = float("nan")
    columns = bucketed(values, {10}, 20)
    assert len(columns) == 20
    assert [i for i, (_, flag, _) in enumerate(columns) if flag] == [2]
    assert [i for i, (v, _, _) in enumerate(columns) if v != v] == [11]
    assert bucketed([1.0, 2.0], {1}, 20) == [(1.0, False, 0), (2.0, True, 1)]


def test_evidence_shapes_pick_their_widgets():
    widgets = evidence_widgets({
        "summary_value": 0.5, "side_by_side": {"harness_sent": "a", "template_sends": "b"},
        "series": {"cos": [1.0, 0.2, 1.0]}, "flagged": [1],
        "metrics": {"acc": {"harness": 0.0, "template": 1.0}},
        "rows": [{"key": "lr", "intended": 1e-4, "effective": 1e-3}],
        "log": "line one\nline two"})
    kinds = [type(w).__name__ for w in widgets]
    assert kinds.count("SideBySide") == 1 and kinds.count("SeriesPlot") == 1
    assert kinds.count("EvidenceTable") == 2
    plot = next(w for w in widgets if isinstance(w, SeriesPlot))
    assert plot.flagged == {1}
    table = next(w for w in widgets if isinstance(w, EvidenceTable))
    assert table._columns == ["metrics", "harness", "template"] and table._rows == [["acc", 0.0, 1.0]]
    assert isinstance(next(w for w in widgets if isinstance(w, SideBySide)), SideBySide)


def test_runner_report_with_unwalked_rungs_equals_a_stopping_walk(tmp_path):
    write_case_files(tmp_path)
    registry = tui_registry()
    ladder = make_ladder(tmp_path, registry)
    stepwise = Runner(ladder, make_case(tmp_path), registry=registry)
    for rung_id in ("harness-file", "format"):
        stepwise.run_rung(rung_id)
    walked = Runner(ladder, make_case(tmp_path), registry=registry).run()
    assert comparable(report_dict(stepwise.report(include_unwalked=True))) == comparable(report_dict(walked))
    assert len(stepwise.report().rungs) == 2  # the plain report is what was walked
    skipped = stepwise.skip_rung("data-file", "no data today")
    assert skipped.status is Status.SKIP and skipped.evidence["reason"] == "no data today"


# ---- the founding case (built by the fixture factory) ---------------------------------------------------


def founding_case_dir():
    from ladder.fixtures import cases

    return cases.build_case("founding")


@pytest.fixture(scope="module")
def founding():
    return founding_case_dir()


@pytest.mark.slow
@pilot_test
async def test_founding_case_n_until_the_culprit_then_f_and_export(founding, tmp_path):
    from helpers import run_cli

    app = build_app(build_parser().parse_args(["tui", str(founding / "case.yaml")]))
    app.export_dir = tmp_path
    async with app.run_test(size=SIZE) as pilot:
        assert not isinstance(app.screen, StartScreen), "the founding case is good input"
        walk = app.walk
        while not any(r.status is Status.FAIL for r in walk.results.values()):
            await pilot.press("n")
            await settle(pilot, timeout=600)
        order = walk.ladder.order
        culprit_at = order.index("prompt-format")
        assert walk.selected == "prompt-format" and walk.results["prompt-format"].status is Status.FAIL
        assert app.walk.query(SideBySide), "the culprit shows what the harness sent next to the template"
        side_names = [str(label.content) for label in app.walk.query(".side-name")]
        assert side_names == ["harness", "template"], side_names
        for label in app.walk.query(".side-name"):  # both sides' heads in view at 100x34, without scrolling
            assert label.region.height and label.region.bottom <= SIZE[1], label.region
        sample = walk.results["prompt-format"].evidence["side_by_side"]
        cells = [str(cell.content).replace("↵\n", "\n") for cell in
                 app.walk.query(SideBySide).first().query(".cell-text")]
        assert sample["harness_sent"] in cells and sample["template_sends"] in cells, cells  # both inputs, as text
        assert sample["prompt"] in sample["template_sends"] and sample["template_sends"] != sample["harness_sent"]
        for rung_id in order[:culprit_at]:
            assert shown_states(app)[rung_id] in ("pass", "warn", "skip"), rung_id
        for rung_id in order[culprit_at + 1:]:
            assert shown_states(app)[rung_id] in ("blocked", "not-run"), rung_id
        await pilot.press("e")
        await pilot.pause()
        app.walk.ladder_list.select_rung(order[culprit_at + 1])
        await pilot.press("enter", "y")  # one rung below, against the advice
        await settle(pilot, timeout=600)
        assert order[culprit_at + 1] in walk.runner.results
        app.walk.ladder_list.select_rung("prompt-format")
        await pilot.press("f")  # the harness is still broken on disk: it fails again; below is reset
        await settle(pilot, timeout=600)
        assert walk.results["prompt-format"].status is Status.FAIL
        assert not set(order[culprit_at + 1:]) & set(walk.runner.results)
    probed = run_cli("probe", str(founding / "case.yaml"), "--json", str(tmp_path / "probe.json"), timeout=900)
    assert probed.returncode == 1, probed.stderr
    exported = json.loads((tmp_path / "ladder-report.json").read_text(encoding="utf-8"))
    assert comparable(exported) == comparable(json.loads((tmp_path / "probe.json").read_text(encoding="utf-8")))


@pilot_test
async def test_fixed_it_reads_the_case_again_and_refuses_a_broken_one(walk_case, tmp_path):
    ladder, case, registry = walk_case
    reads = []

    def reload_case():
        reads.append(1)
        if len(reads) > 1:
            raise InputError.single("model: ./gone does not exist", "case.yaml")
        return Case(model=str(tmp_path / "fixed-model"))

    app = LadderApp(ladder, case, registry, reload_case=reload_case)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f")
        await settle(pilot)
        assert app.walk.runner.case.model.endswith("fixed-model")
        assert "fixed-model" in str(app.walk.query_one("#case-bar").render())
        assert app.walk.results["harness-file"].status is Status.PASS
        before = app.walk.results["harness-file"]
        await pilot.press("f")  # the case file broke meanwhile: nothing is reset or run
        await settle(pilot)
        assert app.walk.results["harness-file"] is before and len(reads) == 2
