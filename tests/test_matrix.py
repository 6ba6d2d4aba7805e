"""The variety matrix through the interface rungs: no culprit on any healthy combination, the right one on
every broken one, whatever the family, the tokenizer's padding and pad settings, or the harness's form.
The same matrix runs through the real CLI and the whole default ladder in bench/bench_matrix.py."""

from __future__ import annotations

import json

import pytest

from matrix import MODELS, combinations, trained_model, write_case

pytestmark = pytest.mark.slow

INTERFACE = ["load-report", "tokenizer-match", "prompt-format", "special-tokens", "generation-config",
             "batch-consistency"]
COMBINATIONS = combinations()


@pytest.fixture(scope="module")
def interface_ladder(tmp_path_factory):
    from ladder.loader import load_ladder

    path = tmp_path_factory.mktemp("ladder") / "interface.yaml"
    others = [r for r in load_ladder().order if r not in INTERFACE]
    path.write_text(json.dumps({"name": "interface", "extends": "llm-checkpoint", "disable": others}))
    return load_ladder(str(path))


@pytest.mark.parametrize("combo", COMBINATIONS, ids=[c.name for c in COMBINATIONS])
def test_the_interface_rungs_name_the_right_culprit(tmp_path, interface_ladder, combo):
    from ladder.case import load_case
    from ladder.runner import Runner

    report = Runner(interface_ladder, load_case(write_case(combo, tmp_path))).run()
    verdicts = {r.id: (r.status.value, r.summary) for r in report.rungs}
    found = report.culprit.rung if report.culprit else None
    assert found == combo.expected({r.id: (r.status.value, r.evidence) for r in report.rungs}), verdicts
    assert not any(status == "error" for status, _ in verdicts.values()), verdicts


def test_the_matrix_spans_families_recipes_settings_forms_and_both_verdicts():
    from families import FAMILIES

    from ladder.fixtures.tokenizer import get_style

    assert {c.family for c in COMBINATIONS} == set(FAMILIES) and len(FAMILIES) >= 6
    styles = [get_style(family) for family in FAMILIES]
    assert any(style.turn_start in style.render([{"role": "user", "content": "x"}], True) for style in styles)
    assert any(style.turn_start not in style.render([{"role": "user", "content": "x"}], True) for style in styles), \
        "markers as plain text, too"
    assert {c.recipe for c in COMBINATIONS} == {"reply", "conversation"}
    assert {(c.padding_side, c.pad) for c in COMBINATIONS} >= {("right", "eos"), ("left", "none")}
    assert {c.form for c in COMBINATIONS} == {"function", "command", "transcript", "pipeline", "lm-eval"}
    healthy = [c for c in COMBINATIONS if c.culprit is None]
    assert len(healthy) >= 10 and len(COMBINATIONS) - len(healthy) >= 10


@pytest.mark.parametrize("family,recipe", MODELS, ids=[f"{f}-{r}" for f, r in MODELS])
def test_every_matrix_model_is_a_chat_model_that_needs_its_template(family, recipe):
    """The premise every verdict of the matrix rests on, as the factory measured it on held-out questions."""
    from ladder.fixtures.models import MATRIX_PREMISE_FLOOR, fixture_info, premise_holds

    info = fixture_info(trained_model(family, recipe))
    premise = info["premise_attempts"][info["premise_chosen"]]
    assert premise_holds(premise, MATRIX_PREMISE_FLOOR), premise
