"""harness-control: the base through the exact same harness path (the tap swaps it in)."""

from __future__ import annotations

import pytest

from interface_models import base_model_dir, chat_model_dir, probe_prompts, run_rungs, rung, variant_harness

pytestmark = pytest.mark.slow


def run(tmp_path, base=True, **harness):
    model = chat_model_dir("chatml")
    spec = variant_harness(tmp_path, model, **harness)
    report, runner = run_rungs(tmp_path, ["harness-control"], model=model, base=base_model_dir() if base else None,
                               harness=spec, prompts=probe_prompts(8))
    return rung(report, "harness-control"), runner


def test_a_harness_that_samples_wildly_degrades_the_base_too(tmp_path):
    result, runner = run(tmp_path, kwargs="max_new_tokens=16, do_sample=True, temperature=8.0, top_k=0")
    assert result.status.value == "fail", result.summary
    drops = result.evidence["degradation_nats_per_token"]
    assert drops["base"] >= 1.0 and drops["model"] >= 1.0
    assert "redirected" in result.evidence["how"]
    assert runner.resources.builds["hf:base"] == 1 and runner.resources.builds["harness:calls:base"] == 1


def test_a_sound_harness_passes_without_running_the_base(tmp_path):
    result, runner = run(tmp_path, mode="template")
    assert result.status.value == "pass", result.summary
    assert result.evidence["degradation_nats_per_token"]["base"] is None
    assert "hf:base" not in runner.resources.builds and "harness:calls:base" not in runner.resources.builds


def test_raw_harness_hurts_only_the_fine_tune_so_the_control_passes(tmp_path):
    result, _ = run(tmp_path, mode="raw")
    assert result.status.value == "pass", result.summary
    assert "fine-tune" in result.summary


def test_without_a_base_it_skips_naming_the_flag(tmp_path):
    result, _ = run(tmp_path, base=False)
    assert result.status.value == "skip" and "--base" in result.summary
