"""The runner: order, stopping at the first culprit, blocked and not-run, errors, skips, timeouts."""

from __future__ import annotations

import threading

from helpers import engine_registry, write
from ladder.case import Case
from ladder.events import RunFinished, RungFinished, RungProgress, RungStarted, RunStarted
from ladder.loader import load_ladder
from ladder.models import Status
from ladder.runner import Runner, exit_status


def make_ladder(tmp_path, rungs: list[tuple[str, str, str, dict]]):
    """rungs: (id, tier, after-list-yaml, params) in file order."""
    body = ""
    for rung_id, tier, after, params in rungs:
        body += (f"  - id: {rung_id}\n    title: {rung_id} is wrong\n    tier: {tier}\n"
                 f"    probe: {params.pop('probe', 'file-check')}\n    params: {params!r}\n"
                 f"    after: {after}\n    why: w\n    fix: fix {rung_id}\n")
    return load_ladder(write(tmp_path / "l.yaml", "name: t\nrungs:\n" + body), engine_registry())


def files(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("content")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    return str(good), str(empty)


def statuses(report):
    return {r.id: r.status for r in report.rungs}


def test_stops_at_first_fail_blocking_dependents(tmp_path):
    good, empty = files(tmp_path)
    ladder = make_ladder(tmp_path, [
        ("a", "interface", "[]", {"path": good}),
        ("b", "interface", "[a]", {"path": empty}),
        ("c", "data", "[]", {"path": good}),
        ("d", "weights", "[b]", {"path": good}),
    ])
    report = Runner(ladder, Case(), registry=engine_registry()).run()
    assert [r.id for r in report.rungs] == ["a", "b", "c", "d"]
    assert statuses(report) == {"a": Status.PASS, "b": Status.FAIL, "c": Status.NOT_RUN, "d": Status.BLOCKED}
    assert report.culprit.rung == "b" and report.culprit.fix == "fix b"
    assert "'b' failed" in report.rungs[3].summary
    assert exit_status(report) == 1


def test_keep_going_runs_all_but_blocked(tmp_path):
    good, empty = files(tmp_path)
    ladder = make_ladder(tmp_path, [
        ("a", "interface", "[]", {"path": empty}),
        ("b", "data", "[]", {"path": good}),
        ("c", "weights", "[b]", {"path": empty}),
        ("d", "architecture", "[a]", {"path": good}),
    ])
    report = Runner(ladder, Case(), registry=engine_registry(), keep_going=True).run()
    assert statuses(report) == {"a": Status.FAIL, "b": Status.PASS, "c": Status.FAIL, "d": Status.BLOCKED}
    assert report.culprit.rung == "a"


def test_probe_error_is_error_with_traceback_and_walk_goes_on(tmp_path):
    good, _ = files(tmp_path)
    ladder = make_ladder(tmp_path, [
        ("a", "interface", "[]", {"path": str(tmp_path / "missing.txt")}),
        ("b", "data", "[a]", {"path": good}),
    ])
    report = Runner(ladder, Case(), registry=engine_registry()).run()
    first = report.rungs[0]
    assert first.status is Status.ERROR and "FileNotFoundError" in first.summary
    assert "Traceback" in first.traceback
    assert report.rungs[1].status is Status.PASS  # an error does not block: it is no evidence
    assert report.culprit is None and not report.complete
    assert exit_status(report) == 3


def test_missing_input_skips_naming_the_flag(tmp_path):
    ladder = make_ladder(tmp_path, [("a", "data", "[]", {"probe": "needs-data"})])
    report = Runner(ladder, Case(), registry=engine_registry()).run()
    assert report.rungs[0].status is Status.SKIP
    assert "--data PATH" in report.rungs[0].summary and "case key `data`" in report.rungs[0].summary
    assert exit_status(report) == 0
    given = Runner(ladder, Case(data=str(tmp_path)), registry=engine_registry()).run()
    assert given.rungs[0].status is Status.PASS


def test_skip_cannot_be_swallowed_and_bad_return_is_error(tmp_path):
    ladder = make_ladder(tmp_path, [("a", "interface", "[]", {"probe": "catches-everything"}),
                                    ("b", "interface", "[]", {"probe": "returns-none"})])
    report = Runner(ladder, Case(), registry=engine_registry()).run()
    assert report.rungs[0].status is Status.SKIP and report.rungs[0].summary == "cannot measure"
    assert report.rungs[1].status is Status.ERROR and "not a Finding" in report.rungs[1].summary


def test_timeout_is_an_error_and_the_walk_goes_on(tmp_path):
    good, _ = files(tmp_path)
    ladder = make_ladder(tmp_path, [("slow", "interface", "[]", {"path": good, "sleep": 5}),
                                    ("b", "data", "[]", {"path": good})])
    report = Runner(ladder, Case(), registry=engine_registry(), rung_timeout=0.3).run()
    assert report.rungs[0].status is Status.ERROR and "timed out after 0.3 s" in report.rungs[0].summary
    assert report.rungs[0].seconds < 2
    assert report.rungs[1].status is Status.PASS


def test_events_in_order(tmp_path):
    good, _ = files(tmp_path)
    ladder = make_ladder(tmp_path, [("a", "interface", "[]", {"path": good, "sleep": 0.05})])
    events = []
    Runner(ladder, Case(), registry=engine_registry(), on_event=events.append).run()
    kinds = [type(e) for e in events]
    assert kinds[0] is RunStarted and kinds[1] is RungStarted and kinds[-1] is RunFinished
    assert RungProgress in kinds and kinds[-2] is RungFinished


def test_cancel_event_stops_a_rung(tmp_path):
    good, _ = files(tmp_path)
    ladder = make_ladder(tmp_path, [("slow", "interface", "[]", {"path": good, "sleep": 5})])
    runner = Runner(ladder, Case(), registry=engine_registry())
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    result = runner.run_rung("slow", cancel_event=cancel)
    assert result.status is Status.NOT_RUN and result.summary == "cancelled"


def test_ctrl_c_gives_partial_report(tmp_path, monkeypatch):
    good, _ = files(tmp_path)
    ladder = make_ladder(tmp_path, [("a", "interface", "[]", {"path": good}),
                                    ("b", "data", "[]", {"path": good})])
    runner = Runner(ladder, Case(), registry=engine_registry())
    original = runner.run_rung

    def interrupt_second(rung_id, **kwargs):
        if rung_id == "b":
            raise KeyboardInterrupt
        return original(rung_id, **kwargs)

    monkeypatch.setattr(runner, "run_rung", interrupt_second)
    report = runner.run()
    assert report.interrupted and statuses(report) == {"a": Status.PASS, "b": Status.NOT_RUN}
    assert exit_status(report) == 130
