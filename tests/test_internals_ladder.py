"""The model-internals rungs in the default ladder: they come after the interface and data rungs, and on
the founding case (a harness that never applies the chat template) they are blocked, not run."""

from __future__ import annotations

import pytest

from helpers import folder_digest
from ladder.models import Status

INTERNALS = ("numerics", "weights-moved", "memorization", "degeneration", "seam-damage", "attention-collapse")


def ancestors(ladder, rung_id: str) -> set[str]:
    by_id = {r.id: r for r in ladder.rungs}
    seen: set[str] = set()
    stack = list(by_id[rung_id].after)
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(by_id[current].after)
    return seen


def test_internals_come_after_the_interface_and_data_rungs():
    from ladder.loader import load_ladder

    ladder = load_ladder(None)
    ids = [r.id for r in ladder.rungs]
    interface = [r.id for r in ladder.rungs if r.tier.value == "interface"]
    for rung_id in INTERNALS:
        assert rung_id in ids
        before = ancestors(ladder, rung_id)
        assert "prompt-format" in before or not interface, (rung_id, before)
        assert {"data-count", "config-read"} <= before, (rung_id, before)


def founding_case(tmp_path):
    """The factory's founding case: the healthy chat model behind a harness that feeds raw text."""
    from ladder.fixtures.cases import build_case

    return build_case("founding", dest=tmp_path / "founding") / "case.yaml"


@pytest.mark.slow
def test_founding_case_blocks_the_internals(tmp_path):
    from ladder.case import load_case
    from ladder.loader import load_ladder
    from ladder.runner import Runner

    case_file = founding_case(tmp_path)
    before = folder_digest(case_file.parent)
    report = Runner(load_ladder(None), load_case(case_file), keep_going=True).run()
    assert folder_digest(case_file.parent) == before, "a probe wrote into the case's folders"
    status = {r.id: r.status for r in report.rungs}
    tiers = {r.id: r.tier.value for r in report.rungs}
    assert status["prompt-format"] in (Status.FAIL, Status.BLOCKED)
    for rung_id in INTERNALS:
        assert status[rung_id] == Status.BLOCKED, (rung_id, status[rung_id])
    assert report.culprit is not None and tiers[report.culprit.rung] == "interface"

    # the chain runs through prompt-format itself: with every other interface rung left out, it still holds
    others = [r.id for r in load_ladder(None).rungs if r.tier.value == "interface" and r.id != "prompt-format"]
    only_format = tmp_path / "only-format.yaml"
    only_format.write_text(f"name: only-format\nextends: llm-checkpoint\ndisable: [{', '.join(others)}]\nrungs: []\n")
    report = Runner(load_ladder(only_format), load_case(case_file), keep_going=True).run()
    status = {r.id: r.status for r in report.rungs}
    assert status["prompt-format"] == Status.FAIL, [(r.id, r.status, r.summary) for r in report.rungs]
    for rung_id in INTERNALS:
        assert status[rung_id] == Status.BLOCKED, (rung_id, status[rung_id])


# ---- the fixture factory's cases, when the factory has them -----------------------------------------------


def run_on_case(rung_id: str, case_yaml, params: dict | None = None):
    import yaml

    from ladder.case import load_case
    from ladder.loader import load_ladder
    from ladder.runner import Runner

    shipped = {r.id: r for r in load_ladder(None).rungs}[rung_id]
    rung = {"id": rung_id, "title": shipped.title, "tier": shipped.tier.value, "probe": shipped.probe,
            "params": {**shipped.params, **(params or {})}, "why": "w", "fix": "f"}
    ladder_file = case_yaml.parent.parent / f"{rung_id}.yaml"
    ladder_file.write_text(yaml.safe_dump({"name": "one", "rungs": [rung]}))
    before = folder_digest(case_yaml.parent)
    result = Runner(load_ladder(ladder_file), load_case(case_yaml), keep_going=True).run().rungs[0]
    assert folder_digest(case_yaml.parent) == before, f"{rung_id} wrote into the case's folders"
    return result


@pytest.mark.slow
@pytest.mark.parametrize("name,rung_id,params,expected", [
    ("frankenmerge", "seam-damage", None, Status.FAIL),
    ("fp16-overflow", "numerics", {"dtypes": ["float16"]}, Status.FAIL),
    ("adapter-unapplied", "weights-moved", None, Status.FAIL),
    ("memorizing", "memorization", None, Status.FAIL),
    ("looping", "degeneration", None, Status.FAIL),
])
def test_factory_broken_cases(tmp_path, name, rung_id, params, expected):
    from ladder.fixtures import cases

    result = run_on_case(rung_id, cases.build_case(name, dest=tmp_path / name) / "case.yaml", params)
    assert result.status == expected, (result.summary, result.evidence)


@pytest.mark.slow
def test_factory_healthy_case_passes_every_internals_rung(tmp_path):
    from ladder.fixtures import cases

    case_yaml = cases.build_case("healthy", dest=tmp_path / "healthy") / "case.yaml"
    for rung_id in INTERNALS:
        result = run_on_case(rung_id, case_yaml)
        assert result.status == Status.PASS, (rung_id, result.summary, result.evidence)
