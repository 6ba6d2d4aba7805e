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


@pytest.mark.slow
def test_exposure_gap_runs_on_only_where_the_reference_leaves_the_greedy_path():
    """The exposure-bias gap equals running every reference's prompt free (the definition: each reference
    token's loss after the model's own greedy prefix), while the free run covers only the references that
    leave the greedy path before their last token, from there: a greedy-exact or short one costs nothing."""
    import torch

    from ladder.backends.hf import HFModel
    from ladder.probes import degeneration
    from ladder.probes.degeneration import exposure_gap, free_run

    hf = HFModel.load(str(chat_model_dir("chatml")))
    try:
        questions = [(3, 4), (9, 8), (2, 6), (7, 7)]
        replies = ["7", "17", "8", "14", "It is 7, I think.", "The sum is 17 of course", "8 8 8 8 8 8", "14."]
        pairs = [(hf.render([{"role": "user", "content": f"What is {a} plus {b}?"}]),
                  hf.tokenize(reply, add_special_tokens=False)) for (a, b), reply in zip(questions * 2, replies)]
        own, _, logits = free_run(hf, [prompt for prompt, _ in pairs], max(len(answer) for _, answer in pairs))
        by_definition = [-float(torch.log_softmax(logits[step][row].float(), dim=-1)[answer[step]])
                         for row, ((_, answer), generated) in enumerate(zip(pairs, own))
                         for step in range(min(len(answer), len(generated)))]
        runs = []
        real_free_run = degeneration.free_run

        def counted(model, starts, max_new_tokens):
            runs.append(len(starts))
            return real_free_run(model, starts, max_new_tokens)

        degeneration.free_run = counted
        try:
            gap = exposure_gap(hf, pairs)
        finally:
            degeneration.free_run = real_free_run
        assert gap["free_running_loss"] == pytest.approx(sum(by_definition) / len(by_definition), abs=1e-3)
        _, hits = hf.greedy_agreement(pairs)
        leaving = sum(1 for row_hits in hits if False in row_hits[:-1])
        assert 0 < leaving < len(pairs)  # both kinds are in the batch
        assert runs == [leaving]
    finally:
        hf.close()
