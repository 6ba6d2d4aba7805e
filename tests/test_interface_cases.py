"""The interface rungs on the fixture factory's cases: each case's bug is named by its rung, the
healthy control (both template styles) by none, and every case is walked in the ladder's order."""

from __future__ import annotations

import json

import pytest

from helpers import folder_digest
from interface_models import rung
from ladder.fixtures import cases

pytestmark = pytest.mark.slow

INTERFACE = ["load-report", "tokenizer-match", "prompt-format", "special-tokens", "generation-config",
             "batch-consistency", "harness-control"]

EXPECTED = [
    ("healthy", "chatml", None),
    ("healthy", "gemma", None),
    ("founding", "chatml", "prompt-format"),
    ("raw-harness", "chatml", "prompt-format"),
    ("double-bos", "gemma", "special-tokens"),
    ("eos-missing", "chatml", "special-tokens"),
    ("right-padding", "chatml", "batch-consistency"),
    ("foreign-tokenizer", "chatml", "tokenizer-match"),
    ("unresized-embeddings", "chatml", "tokenizer-match"),
    ("adapter-unapplied", "chatml", "load-report"),
]


def interface_ladder(tmp_path):
    from ladder.loader import load_ladder

    path = tmp_path / "interface.yaml"
    others = [r for r in load_ladder().order if r not in INTERFACE]
    path.write_text(json.dumps({"name": "interface", "extends": "llm-checkpoint", "disable": others}))
    return load_ladder(str(path))


@pytest.mark.parametrize("name, style, culprit", EXPECTED, ids=[f"{n}-{s}" for n, s, _ in EXPECTED])
def test_each_case_is_named_by_its_interface_rung(tmp_path, name, style, culprit):
    from ladder.case import load_case
    from ladder.runner import Runner

    folder = cases.build_case(name, style=style)
    before = folder_digest(folder)
    runner = Runner(interface_ladder(tmp_path), load_case(folder / "case.yaml"))
    report = runner.run()
    assert folder_digest(folder) == before, "a probe wrote into the case's folders"
    found = report.culprit.rung if report.culprit else None
    assert found == culprit, {r.id: (r.status.value, r.summary) for r in report.rungs}
    assert runner.resources.builds["hf:model"] <= 1 and runner.resources.builds["harness:calls"] <= 1
    if culprit is None:
        assert all(r.status.value in ("pass", "warn") for r in report.rungs), [(r.id, r.summary) for r in report.rungs]


def test_founding_case_puts_both_paths_side_by_side(tmp_path):
    from ladder.case import load_case
    from ladder.runner import Runner

    report = Runner(interface_ladder(tmp_path), load_case(cases.build_case("founding") / "case.yaml")).run()
    side = rung(report, "prompt-format").evidence["side_by_side"]
    assert side["harness_sent"] == side["prompt"] and side["template_sends"] != side["prompt"]
    assert side["harness_answer"] != side["template_answer"]
