"""batch-consistency: one at a time vs batched, through the harness's generate_batch or a reproduction."""

from __future__ import annotations

import pytest

from interface_models import chat_model_dir, probe_prompts, run_rungs, rung, variant_harness

pytestmark = pytest.mark.slow


def run(tmp_path, prompts=None, **harness):
    model = chat_model_dir("chatml")
    spec = variant_harness(tmp_path, model, **harness)
    report, _ = run_rungs(tmp_path, ["batch-consistency"], model=model, harness=spec,
                          prompts=prompts if prompts is not None else probe_prompts(8))
    return rung(report, "batch-consistency")


def test_right_padding_in_the_harnesss_own_batch_fails_with_the_first_differing_prompt(tmp_path):
    result = run(tmp_path, padding_side="right")
    assert result.status.value == "fail", result.summary
    assert "generate_batch" in result.evidence["batched_with"]
    assert "right padding" in result.summary
    side = result.evidence["side_by_side"]
    assert side["one_at_a_time"] != side["batched"]


def test_right_padding_reproduced_from_the_recorded_tokenizer_settings(tmp_path):
    result = run(tmp_path, padding_side="right", batch=False)
    assert result.status.value == "fail", result.summary
    assert "reproduction" in result.evidence["batched_with"]
    assert result.evidence["settings"]["padding_side"] == "right"


@pytest.mark.parametrize("batch", [True, False])
def test_left_padding_with_mask_passes(tmp_path, batch):
    result = run(tmp_path, padding_side="left", batch=batch)
    assert result.status.value == "pass", result.summary


def test_one_prompt_cannot_be_batched(tmp_path):
    result = run(tmp_path, prompts=probe_prompts(1))
    assert result.status.value == "skip" and "prompts" in result.summary
