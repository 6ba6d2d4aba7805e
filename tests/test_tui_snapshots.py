"""What `ladder tui` looks like, as SVG snapshots at a fixed terminal size.

Update with `pytest tests/test_tui_snapshots.py --snapshot-update` and look at the
report (snapshot_report.html) before accepting. Every snapshot shows fixed text (the test
ladder's stub probes): nothing a model generated, which differs between machines. The
founding case's culprit screen is checked by its content in test_tui.py.
"""

from __future__ import annotations

from ladder.cli import build_parser
from ladder.tui.app import LadderApp, build_app
from tui_helpers import make_case, make_ladder, settle, tui_registry, write_case_files

SIZE = (100, 34)


def app_for(root, **files) -> LadderApp:
    write_case_files(root, **files)
    registry = tui_registry()
    return LadderApp(make_ladder(root, registry), make_case(root), registry, export_dir=root)


def pressing(*keys):
    """A run_before that presses keys and waits until the rungs they start have finished."""
    async def run_before(pilot):
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        pilot.app.clear_notifications()
        await pilot.pause()
    return run_before


def test_start(snap_compare, tmp_path):
    assert snap_compare(app_for(tmp_path), terminal_size=SIZE)


def test_passed_rung(snap_compare, tmp_path):
    assert snap_compare(app_for(tmp_path), terminal_size=SIZE, run_before=pressing("n"))


def test_culprit_side_by_side(snap_compare, tmp_path):
    assert snap_compare(app_for(tmp_path), terminal_size=SIZE, run_before=pressing("n", "n"))


def test_culprit_side_by_side_small_terminal(snap_compare, tmp_path):
    assert snap_compare(app_for(tmp_path), terminal_size=(80, 24), run_before=pressing("n", "n"))


def test_confirm_says_why(snap_compare, tmp_path):
    async def run_before(pilot):
        await pressing("n", "n")(pilot)
        await pilot.press("n")  # the rung below the culprit: asks
        await pilot.pause()
    assert snap_compare(app_for(tmp_path), terminal_size=SIZE, run_before=run_before)


def test_series_plot(snap_compare, tmp_path):
    app = app_for(tmp_path, harness_fixed=True, seam=True)
    assert snap_compare(app, terminal_size=SIZE, run_before=pressing("a"))


def test_config_table(snap_compare, tmp_path):
    async def run_before(pilot):
        await pressing("a")(pilot)
        pilot.app.walk.ladder_list.select_rung("config-keys")
        await pilot.pause()
    assert snap_compare(app_for(tmp_path, harness_fixed=True), terminal_size=SIZE, run_before=run_before)


def test_help(snap_compare, tmp_path):
    assert snap_compare(app_for(tmp_path), terminal_size=SIZE, press=["question_mark"])


def test_bad_input(snap_compare, tmp_path, monkeypatch):
    (tmp_path / "case.yaml").write_text("modle: ./ckpt\nexpect_samples: many\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    app = build_app(build_parser().parse_args(["tui", "case.yaml"]))
    assert snap_compare(app, terminal_size=SIZE)
