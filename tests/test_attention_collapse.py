"""attention-collapse: queries and keys blown up so every head is one-hot (fails, also against the base),
healthy models of both styles (pass), and the skip."""

from __future__ import annotations

import pytest

from internals_models import chat_model_dir, collapsed_attention_dir, run_rung
from ladder.models import Status


@pytest.mark.slow
def test_collapsed_heads_fail(tmp_path):
    result = run_rung("attention-collapse", tmp_path, model=collapsed_attention_dir("chatml"))
    assert result.status == Status.FAIL, result.summary
    ev = result.evidence
    assert ev["collapsed_share"] > 0.5
    assert len(ev["series"]["entropy"]) == ev["layers"] * ev["heads_per_layer"] == 16
    assert ev["attention_implementation"] == "eager"
    assert "eager" in ev["notes"][0]  # says it switched from SDPA to read the weights
    assert ev["cost"]["forward_passes"] == 1, "the SDPA pass, which returns no weights, is not run first"


@pytest.mark.slow
def test_collapse_against_the_base_names_the_new_heads(tmp_path):
    result = run_rung("attention-collapse", tmp_path, model=collapsed_attention_dir("chatml"),
                      base=chat_model_dir("chatml"))
    assert result.status == Status.FAIL, result.summary
    assert "base" in result.summary
    assert result.evidence["flagged"] and len(result.evidence["series"]["base_entropy"]) == 16


@pytest.mark.slow
@pytest.mark.parametrize("style", ["chatml", "gemma"])
def test_healthy_heads_pass(tmp_path, style):
    result = run_rung("attention-collapse", tmp_path, model=chat_model_dir(style))
    assert result.status == Status.PASS, (result.summary, result.evidence)
    assert result.evidence["flagged"] == []
    assert min(result.evidence["series"]["entropy"]) > 0.05


def test_skips_without_a_model(tmp_path):
    result = run_rung("attention-collapse", tmp_path)
    assert result.status == Status.SKIP and "--model" in result.summary
