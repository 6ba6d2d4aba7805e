"""The data and config rungs end to end through `ladder probe`, on the fixture factory's case
folders (skipped until `ladder.fixtures.cases` exists), and the default ladder's shape."""

from __future__ import annotations

import json

import pytest

from helpers import folder_digest, run_cli, write

DATA_RUNGS = ("data-count", "label-mask", "data-leak", "config-read")
EXPECTED_CULPRIT = {
    "truncated-data": "data-count",
    "founding": "data-count",
    "misspelled-config": "config-read",
    "collator-no-match": "label-mask",
    "train-eval-overlap": "data-leak",
}


def _data_ladder(tmp_path):
    """The default ladder's data and config rungs only (no model-loading rungs)."""
    others = [r for r in _default_rung_ids() if r not in DATA_RUNGS]
    return write(tmp_path / "data-ladder.yaml", f"""
        name: data-and-config
        extends: llm-checkpoint
        disable: [{", ".join(others)}]
        """)


def _default_rung_ids() -> list[str]:
    from ladder.loader import load_ladder

    return [r.id for r in load_ladder(None).rungs]


def test_default_ladder_has_the_data_rungs_without_interface_edges():
    from ladder.loader import load_ladder

    ladder_ = load_ladder(None)
    for rung_id in DATA_RUNGS:
        rung = ladder_.rung(rung_id)
        assert rung.tier.value == ("config" if rung_id == "config-read" else "data")
        assert not [a for a in rung.after if ladder_.rung(a).tier.value == "interface"]
    order = ladder_.order
    interface = [r.id for r in ladder_.rungs if r.tier.value == "interface"]
    assert all(order.index(i) < order.index("data-count") for i in interface)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_CULPRIT) + ["healthy"])
def test_fixture_case(tmp_path, name):
    from ladder.fixtures import cases

    case_dir = cases.build_case(name, dest=tmp_path / name)
    before = folder_digest(case_dir)
    out = tmp_path / "report.json"
    done = run_cli("probe", str(case_dir / "case.yaml"), "--keep-going", "--json", str(out),
                   "--ladder", str(_data_ladder(tmp_path)), timeout=600)
    assert folder_digest(case_dir) == before, "a probe wrote into the case's folders"
    assert "Traceback" not in done.stderr, done.stderr
    report = json.loads(out.read_text())
    statuses = {r["id"]: r["status"] for r in report["rungs"]}
    assert "error" not in statuses.values(), report["rungs"]
    if name == "healthy":
        assert not [r for r, s in statuses.items() if s == "fail"], report["rungs"]
        assert done.returncode == 0
        return
    culprit = EXPECTED_CULPRIT[name]
    assert statuses[culprit] == "fail", report["rungs"]
    if name == "founding":
        data_count = next(r for r in report["rungs"] if r["id"] == "data-count")
        assert "consumed" in data_count["summary"] and "training loss" in data_count["summary"]
