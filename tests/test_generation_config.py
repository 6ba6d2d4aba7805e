"""generation-config: the settings generate really ran with, side by side with the file and a sane run."""

from __future__ import annotations

import pytest

from interface_models import chat_model_dir, probe_prompts, run_rungs, rung, variant_harness

pytestmark = pytest.mark.slow


def run(tmp_path, kwargs):
    model = chat_model_dir("chatml")
    spec = variant_harness(tmp_path, model, kwargs=kwargs)
    report, _ = run_rungs(tmp_path, ["generation-config"], model=model, harness=spec, prompts=probe_prompts(6))
    return rung(report, "generation-config")


def test_max_new_tokens_too_small_to_answer(tmp_path):
    result = run(tmp_path, "max_new_tokens=1, do_sample=False")
    assert result.status.value == "fail", result.summary
    assert "max_new_tokens 1" in result.summary
    assert result.evidence["settings"]["max_new_tokens"]["harness"] == 1
    assert set(result.evidence["settings"]["max_new_tokens"]) == {"harness", "generation_config.json", "sane"}


def test_extreme_repetition_penalty_and_an_eos_override(tmp_path):
    result = run(tmp_path, "max_new_tokens=16, do_sample=False, repetition_penalty=3.0, eos_token_id=_tok.eos_token_id")
    assert result.status.value == "fail", result.summary
    assert "repetition_penalty 3.0" in result.summary and "end-of-turn" in result.summary
    assert "eos_token_id" in result.evidence["overrides"]
    assert "eos_token_id" in result.evidence["harmful_overrides"]


def test_an_eos_override_with_a_stop_string_on_the_end_of_turn_is_a_warning(tmp_path):
    from test_special_tokens import STOP_STRINGS

    result = run(tmp_path, STOP_STRINGS)
    assert result.status.value == "warn", result.summary
    assert "end-of-turn" in result.summary and result.evidence["past_end_of_turn"]["into_replies"] == 0


def test_greedy_with_a_temperature_is_a_warning(tmp_path):
    result = run(tmp_path, "max_new_tokens=16, do_sample=False, temperature=0.2")
    assert result.status.value == "warn", result.summary
    assert "temperature=0.2" in result.summary


def test_healthy_settings_pass(tmp_path):
    result = run(tmp_path, "max_new_tokens=16, do_sample=False")
    assert result.status.value == "pass", result.summary


def test_without_a_harness_it_skips(tmp_path):
    report, _ = run_rungs(tmp_path, ["generation-config"], model=chat_model_dir("chatml"))
    assert rung(report, "generation-config").status.value == "skip"

