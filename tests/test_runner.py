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


# ---- faults in probes that share the model ----------------------------------------------------------


def _model_rungs(tmp_path, *actions):
    return make_ladder(tmp_path, [(f"r{i}-{action}", "interface", "[]", {"probe": "shared-model", "action": action})
                                  for i, action in enumerate(actions)])


def _warm_tiny_model():
    """The tiny model's folder, loaded once here first: torch and transformers imported, so the timeouts below
    time the probes, not the imports (the first load in a fresh process takes longer than those timeouts)."""
    from interface_models import tiny_random_dir

    from ladder.backends.hf import HFModel

    folder = tiny_random_dir()
    HFModel.load(str(folder))
    return folder


def _probe_threads():
    return [t for t in threading.enumerate() if t.name.startswith("probe:") and t.is_alive()]


def test_a_timed_out_probe_stops_at_its_next_forward_pass_and_the_walk_goes_on(tmp_path):
    ladder = _model_rungs(tmp_path, "forward-forever", "use")
    runner = Runner(ladder, Case(model=str(_warm_tiny_model())), registry=engine_registry(), rung_timeout=1.0,
                    keep_going=True)
    report = runner.run()
    first, second = report.rungs
    assert first.status is Status.ERROR and "timed out after 1 s" in first.summary, first.summary
    assert "it stopped; the shared model is as it was" in first.summary
    assert second.status is Status.PASS and "float32" in second.summary
    assert not _probe_threads()


def test_a_probe_that_will_not_stop_is_abandoned_and_the_model_loaded_afresh(tmp_path, monkeypatch):
    import engine_probes

    import ladder.runner

    monkeypatch.setattr(ladder.runner, "CANCEL_GRACE_S", 0.3)
    engine_probes.STOP_SPINNING.clear()
    try:
        runner = Runner(_model_rungs(tmp_path, "spin-forever", "use"), Case(model=str(_warm_tiny_model())),
                        registry=engine_registry(), rung_timeout=0.5, keep_going=True)
        report = runner.run()
        first, second = report.rungs
        assert first.status is Status.ERROR and "abandoned" in first.summary, first.summary
        assert second.status is Status.PASS
        assert runner.resources.builds["hf:model"] == 1, "the next rung loaded a fresh model"
    finally:
        engine_probes.STOP_SPINNING.set()


def test_a_probe_that_changes_the_shared_model_is_an_error_and_the_next_rung_gets_it_intact(tmp_path):
    from interface_models import tiny_random_dir

    runner = Runner(_model_rungs(tmp_path, "use", "cast", "use"), Case(model=str(tiny_random_dir())),
                    registry=engine_registry(), keep_going=True)
    report = runner.run()
    before, cast, after = report.rungs
    assert before.status is Status.PASS and after.status is Status.PASS
    assert cast.status is Status.ERROR and "dtype torch.float32 -> torch.float16" in cast.summary, cast.summary
    assert cast.evidence["finding_discarded"].startswith("cast the shared model")
    assert after.evidence["fingerprint"] == before.evidence["fingerprint"]


def test_a_model_that_does_not_load_is_one_finding_and_blocks_the_rest(tmp_path):
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "vocab_size": "many"}')
    report = Runner(_model_rungs(tmp_path, "use", "use", "use"), Case(model=str(broken)),
                    registry=engine_registry(), keep_going=True).run()
    first, *rest = report.rungs
    assert first.status is Status.ERROR and first.summary.startswith("the model (`model`) could not be loaded: ")
    assert first.traceback
    assert [r.status for r in rest] == [Status.BLOCKED, Status.BLOCKED]
    assert all(r.evidence["blocked_by"] == first.id and first.id in r.summary for r in rest), rest
    assert exit_status(report) == 3


def test_a_harness_that_does_not_import_is_one_finding(tmp_path):
    import json

    from interface_models import tiny_random_dir

    from ladder.case import load_case
    from ladder.loader import load_ladder

    harness = write(tmp_path / "harness.py", "import no_such_module_anywhere\n\ndef ask(prompt):\n    return ''\n")
    keep = ["prompt-format", "special-tokens", "generation-config"]
    ladder_file = tmp_path / "interface.yaml"
    ladder_file.write_text(json.dumps({"name": "x", "extends": "llm-checkpoint",
                                       "disable": [r for r in load_ladder().order if r not in keep]}))
    case = write(tmp_path / "case.yaml", f"model: {tiny_random_dir()}\nharness: {harness}:ask\n")
    report = Runner(load_ladder(str(ladder_file)), load_case(case), keep_going=True).run()
    first, *rest = report.rungs
    assert first.status is Status.ERROR and "no_such_module_anywhere" in first.summary, first.summary
    assert [r.status for r in rest] == [Status.BLOCKED] * len(rest), [(r.id, r.summary) for r in rest]
    assert all(r.evidence["blocked_by"] == first.id for r in rest)


def test_each_rung_reports_its_cost(tmp_path):
    from interface_models import tiny_random_dir

    report = Runner(_model_rungs(tmp_path, "use", "use"), Case(model=str(tiny_random_dir())),
                    registry=engine_registry()).run()
    # the first rung to need the model loads it; the second gets the same copy
    assert [r.evidence["cost"] for r in report.rungs] == [{"forward_passes": 1, "model_loads": 1},
                                                          {"forward_passes": 1}]


def test_each_rung_gives_its_freed_memory_back(tmp_path, monkeypatch):
    """Each rung runs in a thread of its own, whose malloc arena would keep its peak: the runner trims the heap
    as each rung ends (on this machine, the founding case's peak RSS 2.23 -> 2.15 GB at 400M parameters)."""
    from interface_models import tiny_random_dir

    from ladder.resources import Resources

    trims = []
    monkeypatch.setattr(Resources, "return_freed_memory", staticmethod(lambda: trims.append(1)))
    Runner(_model_rungs(tmp_path, "use", "use"), Case(model=str(tiny_random_dir())), registry=engine_registry()).run()
    assert len(trims) == 2
    monkeypatch.undo()
    Resources.return_freed_memory()  # the real call returns on any C library


def test_the_case_dtype_is_the_dtype_of_ladders_own_load(tmp_path):
    from interface_models import tiny_random_dir

    report = Runner(_model_rungs(tmp_path, "use"), Case(model=str(tiny_random_dir()), dtype="bfloat16"),
                    registry=engine_registry()).run()
    assert report.rungs[0].status is Status.PASS and "bfloat16" in report.rungs[0].summary, report.rungs[0].summary
