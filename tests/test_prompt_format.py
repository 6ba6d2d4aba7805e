"""prompt-format on real tiny chat models (ChatML-like and Gemma-like), and the founding case end to end."""

from __future__ import annotations

import json

import pytest

from helpers import run_cli
from interface_models import (base_model_dir, chat_model_dir, probe_prompts, run_rungs, rung, variant_harness,
                              write_case)

pytestmark = pytest.mark.slow

INTERFACE = ["load-report", "tokenizer-match", "prompt-format", "special-tokens", "generation-config",
             "batch-consistency", "harness-control"]


@pytest.fixture(scope="module")
def prompts():
    return probe_prompts(8)


@pytest.mark.parametrize("style", ["chatml", "gemma"])
def test_raw_harness_on_a_chat_model_fails_with_both_paths_side_by_side(tmp_path, prompts, style):
    model = chat_model_dir(style)
    harness = variant_harness(tmp_path, model, mode="raw")
    report, _ = run_rungs(tmp_path, ["prompt-format"], model=model, harness=harness, prompts=prompts)
    result = rung(report, "prompt-format")
    assert result.status.value == "fail", result.summary
    evidence = result.evidence
    assert evidence["harness_format"] == "raw"
    side = evidence["side_by_side"]
    assert set(side) >= {"prompt", "harness_sent", "template_sends", "harness_answer", "template_answer"}
    assert side["prompt"] in side["harness_sent"] and side["prompt"] in side["template_sends"]
    metrics = evidence["metrics"]
    assert metrics["accuracy"]["template"] >= metrics["accuracy"]["harness"] + 0.25
    assert set(metrics) >= {"accuracy", "end_of_turn_stop_rate", "distinct_2", "mean_logprob"}
    assert all(set(row) == {"harness", "template"} for row in metrics.values())
    assert evidence["template"]["end_of_turn"] in side["template_sends"] or evidence["template"]["markers"]


@pytest.mark.parametrize("style", ["chatml", "gemma"])
@pytest.mark.parametrize("mode", ["raw", "truncate"])
def test_without_case_prompts_a_harness_off_the_format_fails_on_the_default_questions(tmp_path, style, mode):
    """No `prompts:` in the case: the default questions decide. Raw text, or a templated prompt whose end
    (the generation prompt, part of the question) is cut, changes the replies: the harness fails."""
    model = chat_model_dir(style)
    harness = variant_harness(tmp_path, model, mode=mode)
    report, _ = run_rungs(tmp_path, ["prompt-format"], model=model, harness=harness)
    result = rung(report, "prompt-format")
    assert result.status.value == "fail", result.summary
    differ = result.evidence["replies_differ"]
    from ladder.harness import DEFAULT_PROMPTS

    assert differ["prompts"] == len(DEFAULT_PROMPTS) and differ["differing"] >= 2 and differ["rate"] >= 0.25, differ
    side = result.evidence["side_by_side"]
    assert side["harness_answer"] != side["template_answer"]


@pytest.mark.parametrize("style", ["chatml", "gemma"])
def test_without_case_prompts_the_templated_harness_passes(tmp_path, style):
    model = chat_model_dir(style)
    harness = variant_harness(tmp_path, model, mode="template")
    report, _ = run_rungs(tmp_path, ["prompt-format"], model=model, harness=harness)
    result = rung(report, "prompt-format")
    assert result.status.value == "pass", result.summary


HAND_DECODING_HARNESS = """
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

_tok = AutoTokenizer.from_pretrained({model!r})
_model = AutoModelForCausalLM.from_pretrained({model!r}).eval()
_stops = {{_tok.eos_token_id, *(_model.generation_config.eos_token_id or [])}}


@torch.no_grad()
def ask(prompt):
    if {templated!r}:
        ids = _tok.apply_chat_template([{{"role": "user", "content": prompt}}], add_generation_prompt=True,
                                       return_tensors="pt", return_dict=True)["input_ids"]
    else:
        ids = _tok(prompt, return_tensors="pt").input_ids
    start, past, step = ids.shape[1], None, ids
    for _ in range(16):
        out = _model(input_ids=step, past_key_values=past, use_cache=True)
        token = int(out.logits[0, -1].argmax())
        if token in _stops:
            break
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        step, past = ids[:, -1:], out.past_key_values
    return _tok.decode(ids[0, start:], skip_special_tokens=True)
"""


@pytest.mark.parametrize("templated, verdict", [(False, "fail"), (True, "pass")])
def test_a_harness_that_decodes_by_hand_is_judged_on_what_it_sent(tmp_path, templated, verdict):
    """A greedy loop of forward passes on a KV cache, no generate call: raw text fails, the template passes."""
    model = chat_model_dir("chatml")
    (tmp_path / "harness.py").write_text(HAND_DECODING_HARNESS.format(model=str(model), templated=templated))
    report, _ = run_rungs(tmp_path, ["prompt-format", "generation-config"], model=model,
                          harness=f"{tmp_path / 'harness.py'}:ask")
    assert rung(report, "prompt-format").status.value == verdict, rung(report, "prompt-format").summary
    assert rung(report, "generation-config").status.value == "skip", "its stopping is its own code"


CHAT_MESSAGES_HARNESS = '''
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({model!r})
model = AutoModelForCausalLM.from_pretrained({model!r})


def chat(messages: list[dict]) -> str:
    if {templated!r}:
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                               return_tensors="pt")
    else:  # the conversation's text, sent raw
        inputs = tokenizer("\\n".join(m["content"] for m in messages), return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
'''


@pytest.mark.parametrize("templated, verdict", [(False, "fail"), (True, "pass")])
def test_a_harness_that_takes_chat_messages_is_judged_on_what_it_sent(tmp_path, templated, verdict):
    """`chat(messages) -> str` is asked the prompts as user messages: raw text fails, the template passes."""
    model = chat_model_dir("chatml")
    (tmp_path / "harness.py").write_text(CHAT_MESSAGES_HARNESS.format(model=str(model), templated=templated))
    report, _ = run_rungs(tmp_path, ["prompt-format"], model=model, harness=f"{tmp_path / 'harness.py'}:chat")
    assert rung(report, "prompt-format").status.value == verdict, rung(report, "prompt-format").summary


def test_replies_agree_on_their_first_words_and_empty_only_with_empty():
    from ladder.harness.compare import disagreement, replies_agree

    assert replies_agree("7", " 7.") and replies_agree("Paris is the capital", "paris is the capital of France.")
    assert not replies_agree("", "7") and replies_agree("", "  ") and not replies_agree("7", "8")
    assert not replies_agree("The sum of 3 and 4", "What is 3 plus 4?")
    differ = disagreement(["", "", "7", "x"], ["5", "Paris", "7", "x y"])
    assert (differ["differing"], differ["rate"], differ["empty_replies"]) == (2, 0.5, {"harness": 2, "template": 0})


@pytest.mark.parametrize("style", ["chatml", "gemma"])
def test_harness_that_applies_the_template_passes(tmp_path, prompts, style):
    model = chat_model_dir(style)
    harness = variant_harness(tmp_path, model, mode="template")
    report, _ = run_rungs(tmp_path, ["prompt-format"], model=model, harness=harness, prompts=prompts)
    result = rung(report, "prompt-format")
    assert result.status.value == "pass", result.summary
    assert result.evidence["identical_to_template"] == len(prompts)


@pytest.mark.parametrize("style", ["chatml", "gemma"])
@pytest.mark.parametrize("mode", ["few-shot", "prefill"])
def test_a_conversation_or_an_answer_prefix_through_the_template_passes(tmp_path, prompts, style, mode):
    """A worked example as an earlier exchange, or the reply begun by the harness ("The answer is"): the
    template's own format, used on purpose, whatever it does to the replies."""
    model = chat_model_dir(style)
    harness = variant_harness(tmp_path, model, mode=mode)
    report, _ = run_rungs(tmp_path, ["prompt-format"], model=model, harness=harness, prompts=prompts)
    result = rung(report, "prompt-format")
    assert result.status.value == "pass", result.summary
    assert ("answer prefix" in result.summary) == (mode == "prefill")


def test_template_applied_twice_is_named(tmp_path, prompts):
    model = chat_model_dir("chatml")
    harness = variant_harness(tmp_path, model, mode="twice")
    report, _ = run_rungs(tmp_path, ["prompt-format"], model=model, harness=harness, prompts=prompts)
    result = rung(report, "prompt-format")
    assert result.evidence["harness_format"] == "template-twice"
    assert result.status.value in ("fail", "warn"), result.summary


def test_base_model_without_template_and_raw_harness_skips_with_the_reason(tmp_path, prompts):
    model = base_model_dir()
    harness = variant_harness(tmp_path, model, mode="raw")
    report, _ = run_rungs(tmp_path, ["prompt-format"], model=model, harness=harness, prompts=prompts)
    result = rung(report, "prompt-format")
    assert result.status.value == "skip" and "no chat template" in result.summary


def test_without_a_harness_it_skips_naming_the_flags(tmp_path, prompts):
    report, _ = run_rungs(tmp_path, ["prompt-format"], model=chat_model_dir("chatml"), prompts=prompts)
    result = rung(report, "prompt-format")
    assert result.status.value == "skip" and "--harness" in result.summary and "--transcript" in result.summary


def test_a_crashing_harness_is_an_error_with_its_own_traceback_not_a_verdict(tmp_path, prompts):
    (tmp_path / "broken.py").write_text("def ask(prompt):\n    return undefined_name + prompt\n", encoding="utf-8")
    report, _ = run_rungs(tmp_path, INTERFACE[:4], model=chat_model_dir("chatml"),
                          harness=f"{tmp_path / 'broken.py'}:ask", prompts=prompts)
    # one finding, by the first rung that ran the harness; the later ones are blocked by it
    first, *later = [r for r in report.rungs if r.status.value in ("error", "blocked")]
    assert first.status.value == "error", first.summary
    assert "your harness failed" in first.summary and "NameError" in first.summary
    assert "broken.py" in first.traceback and "undefined_name" in first.traceback
    for rung_id in ("prompt-format", "special-tokens"):
        result = rung(report, rung_id)
        assert result.status.value == "blocked" and result.evidence["blocked_by"] == first.id, result.summary
    assert report.culprit is None


def test_transcript_of_raw_prompts_fails_too(tmp_path, prompts):
    model = chat_model_dir("chatml")
    transcript = tmp_path / "t.jsonl"
    transcript.write_text("".join(json.dumps({"input": p["prompt"], "output": "?"}) + "\n" for p in prompts),
                          encoding="utf-8")
    report, _ = run_rungs(tmp_path, ["prompt-format"], model=model, transcript=transcript, prompts=prompts)
    result = rung(report, "prompt-format")
    assert result.status.value == "fail" and result.evidence["harness_format"] == "raw"
    assert result.evidence["harness_form"] == "transcript"


def test_interface_rungs_share_one_model_load_and_one_harness_run(tmp_path, prompts):
    model = chat_model_dir("chatml")
    harness = variant_harness(tmp_path, model, mode="template")
    report, runner = run_rungs(tmp_path, INTERFACE, model=model, base=base_model_dir(), harness=harness,
                               prompts=prompts)
    assert runner.resources.builds["hf:model"] == 1
    assert runner.resources.builds["hf:base"] == 0, "a sound harness path needs no control run on the base"
    assert runner.resources.builds["harness:calls"] == 1 and runner.resources.builds["harness:batch"] <= 1
    statuses = {r.id: r.status.value for r in report.rungs}
    assert all(statuses[r] == "pass" for r in INTERFACE), {r.id: r.summary for r in report.rungs}
    assert report.culprit is None


def test_founding_case_through_the_real_cli_names_prompt_format_first(tmp_path, prompts):
    model = chat_model_dir("chatml")
    harness = variant_harness(tmp_path, model, mode="raw", doc="the founding case: raw text to a chat model")
    case = write_case(tmp_path, description="founding", model=str(model), harness=harness, prompts=prompts)
    result = run_cli("probe", str(case), "--json", str(tmp_path / "r.json"), timeout=900)
    assert result.returncode == 1, result.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["culprit"]["rung"] == "prompt-format"
    walked = [r for r in report["rungs"] if r["status"] not in ("not-run", "blocked")]
    assert walked[-1]["id"] == "prompt-format"
    assert all(r["tier"] == "interface" for r in walked), "no rung of a lower tier runs before the culprit"
    assert all(r["status"] == "pass" for r in walked[:-1]), [(r["id"], r["status"], r["summary"]) for r in walked]


def test_demo_names_prompt_format(tmp_path):
    result = run_cli("demo", "--out", str(tmp_path / "demo"), "--json", str(tmp_path / "r.json"), timeout=1800)
    assert result.returncode == 1, result.stderr[-3000:]
    assert json.loads((tmp_path / "r.json").read_text())["culprit"]["rung"] == "prompt-format"


def test_harness_command_gets_the_tap_and_fails_the_same_way(tmp_path, prompts):
    import sys

    model = chat_model_dir("chatml")
    variant_harness(tmp_path, model, mode="raw")
    script = tmp_path / "eval.py"
    script.write_text("import sys\nsys.path.insert(0, %r)\nimport harness\nprint(harness.ask(sys.argv[1]))\n"
                      % str(tmp_path), encoding="utf-8")
    report, _ = run_rungs(tmp_path, ["prompt-format"], model=model, prompts=prompts[:4],
                          harness_cmd=f"{sys.executable} {script} {{prompt}}")
    result = rung(report, "prompt-format")
    assert result.status.value == "fail", result.summary
    assert result.evidence["harness_form"] == "command" and result.evidence["harness_format"] == "raw"
