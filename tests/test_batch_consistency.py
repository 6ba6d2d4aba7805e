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


def test_right_padding_in_a_harness_that_never_batches_is_a_warning_with_the_reproduction(tmp_path):
    """The tokenizer pads on the right (as many real ones ship), but the harness sends one prompt per call:
    the reproduction changes outputs, which is a hazard off the user's path, never the culprit."""
    result = run(tmp_path, padding_side="right", batch=False)
    assert result.status.value == "warn", result.summary
    assert "reproduction" in result.evidence["batched_with"] and not result.evidence["harness_batches"]
    assert result.evidence["settings"]["padding_side"] == "right"
    assert result.evidence["differing"] >= 1 and "side_by_side" in result.evidence


def test_a_generate_call_with_several_rows_is_the_harnesss_own_batching():
    from ladder.harness import HarnessRun
    from ladder.probes.batch_consistency import harness_batches

    one = {"input_ids": [[5, 6, 7]], "attention_mask": [[1, 1, 1]]}
    two = {"input_ids": [[5, 6, 7], [0, 8, 9]], "attention_mask": [[1, 1, 1], [0, 1, 1]]}
    single = HarnessRun(form="function", spec="h.py:ask", calls=[{"prompt": "a", "generate": [one]}] * 2)
    batched = HarnessRun(form="function", spec="h.py:ask", calls=[{"prompt": "a", "generate": [two]}])
    assert not harness_batches(single) and harness_batches(batched)


@pytest.mark.parametrize("batch", [True, False])
def test_left_padding_with_mask_passes(tmp_path, batch):
    result = run(tmp_path, padding_side="left", batch=batch)
    assert result.status.value == "pass", result.summary


def test_one_prompt_cannot_be_batched(tmp_path):
    result = run(tmp_path, prompts=probe_prompts(1))
    assert result.status.value == "skip" and "prompts" in result.summary


SAMPLING = "max_new_tokens=16, do_sample=True, temperature=1.0, top_k=0"


@pytest.mark.parametrize("side, status", [("left", "pass"), ("right", "fail")])
def test_a_sampling_harness_is_batched_greedily_with_its_own_padding(tmp_path, side, status):
    """Sampled outputs differ between any two runs: compared as they come, a healthy batched harness that samples
    was the culprit. Greedy here, with the padding its own batch used: only right padding still fails."""
    result = run(tmp_path, padding_side=side, kwargs=SAMPLING)
    assert result.status.value == status, result.summary
    assert "samples" in result.evidence["batched_with"] and result.evidence["settings"]["padding_side"] == side


def test_one_prompt_in_many_changed_by_batching_is_a_warning_not_a_culprit():
    """Batched kernels flip greedy near-ties: below the material bar (two prompts and 25%), a warn."""
    from ladder.probes.batch_consistency import BatchConsistency, Params

    prompts = [f"p{i}" for i in range(12)]
    singles = [f"reply {i}" for i in range(12)]
    settings = {"padding_side": "left", "attention_mask_passed": True, "pad_token_id": 0, "eos_token_id": 2}
    bar = Params().min_disagreement
    one = BatchConsistency._verdict(prompts, singles, ["other"] + singles[1:], settings, "a test", min_disagreement=bar)
    three = BatchConsistency._verdict(prompts, singles, ["x", "y", "z"] + singles[3:], settings, "a test",
                                      min_disagreement=bar)
    assert one.status.value == "warn" and one.evidence["differing"] == 1, one.summary
    assert three.status.value == "fail" and three.evidence["differing"] == 3, three.summary
