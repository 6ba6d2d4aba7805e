"""degeneration: a model tuned on replies that repeat until the limit (fails), the healthy chat model of
both styles (passes), the exposure-bias gap on reference answers, and the loop maths."""

from __future__ import annotations

import pytest

from internals_models import addition_data, chat_model_dir, looping_dir, run_rung
from ladder.models import Status
from ladder.probes.degeneration import distinct, repeated_share, trailing_loop


def test_loop_maths():
    assert trailing_loop([5, 6] + [7, 8] * 10, min_tokens=12) == {"period": 2, "tokens": 20}
    assert trailing_loop([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], min_tokens=12) is None
    assert trailing_loop([1, 2, 3, 3], min_tokens=12) is None  # too short to call a loop
    assert repeated_share([1, 2, 3, 1, 2, 3], 3) == pytest.approx(0.25)
    assert repeated_share([1, 2], 3) == 0.0
    assert distinct([[1, 1, 1], [2]], 1) == 0.5


@pytest.mark.slow
def test_looping_model_fails(tmp_path):
    result = run_rung("degeneration", tmp_path, model=looping_dir("chatml"))
    assert result.status == Status.FAIL, (result.summary, result.evidence)
    ev = result.evidence
    assert ev["figures"]["loop_share"] > 0.5 and ev["figures"]["stop_rate"] < 0.5
    assert ev["format"] == "chat template"
    assert ev["series"]["entropy"] and ev["flagged"]


@pytest.mark.slow
@pytest.mark.parametrize("style", ["chatml", "gemma"])
def test_healthy_model_passes_with_reference_answers(tmp_path, style):
    _, held = addition_data(tmp_path / "data", n=8)
    result = run_rung("degeneration", tmp_path, model=chat_model_dir(style), eval_data=held)
    assert result.status == Status.PASS, (result.summary, result.evidence)
    bias = result.evidence["exposure_bias"]
    assert bias["references"] == 8 and bias["gap"] < 1.0


@pytest.mark.slow
def test_looping_model_against_its_base(tmp_path):
    result = run_rung("degeneration", tmp_path, model=looping_dir("chatml"), base=chat_model_dir("chatml"))
    assert result.status == Status.FAIL
    assert result.evidence["base_figures"]["loop_share"] == 0.0
    assert "base loops" not in result.summary


def test_skips_without_a_model(tmp_path):
    result = run_rung("degeneration", tmp_path)
    assert result.status == Status.SKIP and "--model" in result.summary
