"""memorization: a model tuned to ~0 loss on a dozen samples (fails, points at data-count), the healthy chat
model on its own training and held-out conversations (passes), the skips."""

from __future__ import annotations

import pytest

from internals_models import addition_data, chat_model_dir, memo_data, memorizing_dir, run_rung
from ladder.models import Status
from ladder.probes.memorization import sample_of


def test_rows_become_prefix_and_continuation():
    chat = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                         {"role": "assistant", "content": "a"}]}
    assert sample_of(chat) == ([{"role": "system", "content": "s"}, {"role": "user", "content": "q"}], "a")
    assert sample_of({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}) == \
        ([{"role": "user", "content": "q"}], "a")
    assert sample_of({"prompt": "q", "completion": "a"}) == ([{"role": "user", "content": "q"}], "a")
    assert sample_of({"text": "plain"}) == (None, "plain")
    assert sample_of({"id": 3}) is None


@pytest.mark.slow
def test_memorizing_model_fails(tmp_path):
    train, held = memo_data(tmp_path / "data")
    result = run_rung("memorization", tmp_path, model=memorizing_dir("chatml"), data=train, eval_data=held)
    assert result.status == Status.FAIL, (result.summary, result.evidence)
    ev = result.evidence
    assert ev["train"]["exact_match"] >= 0.8 and ev["held_out"]["exact_match"] <= 0.2
    assert "data-count" in result.summary  # a dozen rows: the fix points at the loader
    assert len(ev["series"]["train_loss"]) == ev["train"]["samples"]


@pytest.mark.slow
@pytest.mark.parametrize("style", ["chatml", "gemma"])
def test_generalising_model_passes(tmp_path, style):
    train, held = addition_data(tmp_path / "data")
    result = run_rung("memorization", tmp_path, model=chat_model_dir(style), data=train, eval_data=held)
    assert result.status == Status.PASS, (result.summary, result.evidence)


def test_skips_without_data(tmp_path):
    result = run_rung("memorization", tmp_path, model=tmp_path)
    assert result.status == Status.SKIP and "--data" in result.summary


def test_skips_without_held_out_samples(tmp_path):
    train, _ = memo_data(tmp_path / "data")
    result = run_rung("memorization", tmp_path, model=tmp_path, data=train)
    assert result.status == Status.SKIP and "--eval-data" in result.summary
