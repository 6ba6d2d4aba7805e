"""The sharded path on CPU: a `max_memory` so small that accelerate keeps only the embeddings in memory and
offloads the decoder layers, the final norm and the head to disk (meta tensors in the model, values loaded
by hooks at each forward), as `--device auto` does with what a GPU cannot hold. Every rung that reads
weights or hooks layers must give the verdict, and the evidence, it gives on the model loaded whole."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

OFFLOADED = "cpu=1MB"
WEIGHT_READERS = ("tokenizer-match", "numerics", "weights-moved", "seam-damage", "attention-collapse")


def walk(case_name: str, **overrides):
    from ladder.case import load_case
    from ladder.fixtures import cases
    from ladder.loader import load_ladder
    from ladder.runner import Runner

    case = load_case(str(cases.build_case(case_name) / "case.yaml"), overrides)
    return Runner(load_ladder(), case, keep_going=True).run()


def without_cost(evidence: dict) -> dict:
    return {k: v for k, v in evidence.items() if k != "cost"}


def test_max_memory_offloads_the_layers_to_disk():
    from ladder.backends.hf import HFModel, is_offloaded, named_weights
    from ladder.fixtures import models

    loaded = HFModel.load(str(models.chat_model_dir("chatml")), max_memory=OFFLOADED)
    try:
        placement = loaded.network.hf_device_map
        assert "disk" in placement.values() and is_offloaded(loaded.network), placement
        values = dict((name, float(t.detach().float().abs().sum())) for name, t in named_weights(loaded.network))
        assert len(values) == len(list(loaded.network.named_parameters())) and all(v > 0 for v in values.values())
        assert str(loaded.device) == "cpu"
    finally:
        loaded.close()


@pytest.mark.parametrize("case_name", ["healthy", "frankenmerge"])
def test_every_rung_says_on_the_offloaded_model_what_it_says_on_the_whole_one(case_name):
    whole, offloaded = walk(case_name), walk(case_name, max_memory=OFFLOADED)
    assert [(r.id, r.status.value) for r in offloaded.rungs] == [(r.id, r.status.value) for r in whole.rungs]
    assert (offloaded.culprit.rung if offloaded.culprit else None) == (whole.culprit.rung if whole.culprit else None)
    if case_name == "frankenmerge":
        assert whole.culprit is not None and whole.culprit.rung == "seam-damage", whole.culprit
    for rung in WEIGHT_READERS:
        a = next(r for r in whole.rungs if r.id == rung)
        b = next(r for r in offloaded.rungs if r.id == rung)
        assert without_cost(b.evidence) == without_cost(a.evidence), rung


def test_a_max_memory_that_is_not_a_size_is_refused_with_a_message(tmp_path):
    import subprocess
    import sys

    command = [sys.executable, "-m", "ladder", "probe", "--model", str(tmp_path), "--max-memory", "cpu=lots"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "max_memory" in done.stderr and "Traceback" not in done.stderr, done.stderr
