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


def test_scoring_stops_once_the_training_samples_settle_the_verdict():
    """After each chunk of training samples: stop once the misses put the reciting rate out of reach and the
    loss already exceeds a fit's; one of the two still open (a model that recites, or fits at a tiny loss
    with near misses) scores every sample."""
    from ladder.probes.memorization import MemorizationParams, beyond_reach, score

    class Scorer:
        def __init__(self, hits: list[bool], loss: float):
            self.hits, self.loss, self.rows = hits, loss, 0

        def greedy_agreement(self, pairs):
            rows = range(self.rows, self.rows + len(pairs))
            self.rows += len(pairs)
            return [[-self.loss] * 2 for _ in rows], [[self.hits[r]] * 2 for r in rows]

    params = MemorizationParams()
    samples = [([1], [2, 3])] * 32
    misses = Scorer([False] * 32, loss=1.5)
    assert len(score(misses, samples, settled=beyond_reach(32, params))["exact"]) == 8
    assert misses.rows == 8
    reciting = Scorer([True] * 32, loss=0.01)
    assert len(score(reciting, samples, settled=beyond_reach(32, params))["exact"]) == 32
    near_misses = Scorer([False] * 32, loss=0.05)  # out of reach for reciting, not for fitting only train
    assert len(score(near_misses, samples, settled=beyond_reach(32, params))["exact"]) == 32
    # 5 of 8 missed: 27/32 still reachable (>= 80%); 7 of 8 missed: 25/32 is not
    five = Scorer([False] * 5 + [True] * 27, loss=1.0)
    assert len(score(five, samples, settled=beyond_reach(32, params))["exact"]) > 8
    seven = Scorer([False] * 7 + [True] * 25, loss=1.0)
    assert len(score(seven, samples, settled=beyond_reach(32, params))["exact"]) == 8


@pytest.mark.slow
def test_a_model_that_does_not_recite_its_data_settles_early_with_the_full_verdict(tmp_path):
    """The chat model on rows it was never tuned on (the memorizing model's mislabelled questions): it recites
    none, so scoring stops after the first chunk, held-out on as many; scoring everything gives the same
    verdict."""
    train, held = memo_data(tmp_path / "data")
    (tmp_path / "quick").mkdir()
    (tmp_path / "full").mkdir()
    quick = run_rung("memorization", tmp_path / "quick", model=chat_model_dir("chatml"), data=train,
                     eval_data=held)
    full = run_rung("memorization", tmp_path / "full", params={"stop_when_settled": False},
                    model=chat_model_dir("chatml"), data=train, eval_data=held)
    assert quick.status == full.status == Status.PASS, (quick.summary, full.summary)
    available = full.evidence["train"]["samples"]
    assert quick.evidence["train"]["samples"] == quick.evidence["held_out"]["samples"] == 8 < available
    assert quick.evidence["train"]["available"] == available and "settled after 8" in quick.evidence["notes"][0]
    assert "out of reach" in quick.summary
