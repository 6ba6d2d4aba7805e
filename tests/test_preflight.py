"""`ladder preflight`: only the rungs that need no model run, all of them, in seconds; a data fault fails it
(exit 1) and its healthy twin passes (exit 0)."""

from __future__ import annotations

import json

import pytest

from helpers import run_cli

pytestmark = pytest.mark.slow

MODEL_FREE = {"data-count", "label-mask", "data-leak", "config-read"}


@pytest.mark.parametrize("name,culprit", [("founding", "data-count"), ("collator-no-match", "label-mask"),
                                          ("healthy", None)])
def test_preflight_runs_only_the_model_free_rungs_and_names_the_data_fault(tmp_path, name, culprit):
    from ladder.fixtures import cases

    case = cases.build_case(name, dest=tmp_path / name) / "case.yaml"
    report_path = tmp_path / "report.json"
    done = run_cli("preflight", str(case), "--json", str(report_path))
    report = json.loads(report_path.read_text())
    statuses = {r["id"]: r["status"] for r in report["rungs"]}
    assert set(statuses) == MODEL_FREE, statuses
    assert done.returncode == (1 if culprit else 0), (done.stdout, done.stderr)
    assert (report["culprit"] or {}).get("rung") == culprit, statuses
    assert all(status != "not-run" for status in statuses.values()), "a preflight runs every rung"
    assert not any(r["evidence"].get("cost", {}).get("model_loads") for r in report["rungs"])
