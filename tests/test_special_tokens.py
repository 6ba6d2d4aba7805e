"""special-tokens: a doubled BOS, an end-of-turn token missing from the stop ids, and the healthy control."""

from __future__ import annotations

import pytest

from interface_models import chat_model_dir, probe_prompts, run_rungs, rung, variant_harness

pytestmark = pytest.mark.slow


def run(tmp_path, style, model=None, **harness):
    model = model or chat_model_dir(style)
    spec = variant_harness(tmp_path, model, **harness)
    report, _ = run_rungs(tmp_path, ["special-tokens"], model=model, harness=spec, prompts=probe_prompts(6))
    return rung(report, "special-tokens")


def bos_sensitive_model():
    """The double-bos case's model: gemma's chat model that a doubled BOS throws off."""
    from ladder.fixtures.cases import build_case

    return build_case("double-bos") / "model"


def test_a_doubled_bos_that_changes_the_replies_fails(tmp_path):
    result = run(tmp_path, "gemma", model=bos_sensitive_model(), mode="render-then-tokenize")
    assert result.status.value == "fail", result.summary
    assert "BOS" in result.summary and "replies differ" in result.summary
    assert min(result.evidence["leading_bos"]["harness"]) == 2
    assert max(result.evidence["leading_bos"]["template_path"]) == 1
    assert result.evidence["bos_effect"]["differing"] >= 2


def test_a_doubled_bos_the_model_replies_through_the_same_is_a_warn(tmp_path):
    """gemma's chat model answers alike after one BOS or two: the hazard is shown, not blamed."""
    result = run(tmp_path, "gemma", mode="render-then-tokenize")
    assert result.status.value == "warn", result.summary
    assert "2 BOS" in result.summary and "replies the same" in result.summary
    assert not result.evidence["bos_effect"]["material"]


def test_the_bos_sensitive_model_through_its_template_passes(tmp_path):
    result = run(tmp_path, "gemma", model=bos_sensitive_model(), mode="template")
    assert result.status.value == "pass", result.summary


def test_end_of_turn_missing_from_the_stop_ids(tmp_path):
    result = run(tmp_path, "chatml", kwargs="max_new_tokens=16, do_sample=False, eos_token_id=_tok.eos_token_id")
    assert result.status.value == "fail", result.summary
    assert "end-of-turn" in result.summary
    assert result.evidence["end_of_turn"]["id"] not in result.evidence["stop_ids"]
    past = result.evidence["past_end_of_turn"]
    assert past["into_replies"] == past["prompts"] > 0 and past["example"], past


# the same eos override, with generation stopped on the marker's text (transformers' stop_strings)
STOP_STRINGS = ("max_new_tokens=16, do_sample=False, eos_token_id=_tok.eos_token_id, "
                "stop_strings=[_tok.convert_ids_to_tokens(4)], tokenizer=_tok")


def cut_at_end_of_turn(harness_file):
    """The harness decodes the special tokens and cuts its reply at the end-of-turn marker's text itself."""
    source = harness_file.read_text()
    decode = "return _tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)"
    assert decode in source
    harness_file.write_text(source.replace(decode, "return _tok.decode(out[0, ids.shape[1]:]).split("
                                                   "_tok.convert_ids_to_tokens(4))[0]"))


def test_end_of_turn_missing_from_the_stop_ids_changes_nothing_when_generation_stops_on_its_text(tmp_path):
    result = run(tmp_path, "chatml", kwargs=STOP_STRINGS)
    assert result.status.value == "warn", result.summary
    assert result.evidence["end_of_turn"]["id"] not in result.evidence["stop_ids"]
    assert result.evidence["past_end_of_turn"]["into_replies"] == 0, result.evidence["past_end_of_turn"]


def test_end_of_turn_missing_from_the_stop_ids_changes_nothing_when_the_harness_cuts_there(tmp_path):
    model = chat_model_dir("chatml")
    spec = variant_harness(tmp_path, model, kwargs="max_new_tokens=16, do_sample=False, eos_token_id=_tok.eos_token_id")
    cut_at_end_of_turn(tmp_path / "harness.py")
    report, _ = run_rungs(tmp_path, ["special-tokens"], model=model, harness=spec, prompts=probe_prompts(6))
    result = rung(report, "special-tokens")
    assert result.status.value == "warn", result.summary
    past = result.evidence["past_end_of_turn"]
    assert past["ran_past"] == past["prompts"] > 0 and past["into_replies"] == 0, past


def test_end_of_turn_missing_from_the_stop_ids_of_a_transcript_without_generated_ids_still_fails(tmp_path):
    """Nothing shows what followed the end of turn: the missing stop id itself is the finding, as before."""
    import json

    from transformers import AutoTokenizer

    model = chat_model_dir("chatml")
    tokenizer = AutoTokenizer.from_pretrained(model)
    lines = [{"prompt": p["prompt"], "output": "7", "generate_kwargs": {"eos_token_id": tokenizer.eos_token_id},
              "input_ids": tokenizer.apply_chat_template([{"role": "user", "content": p["prompt"]}],
                                                         add_generation_prompt=True, return_dict=True)["input_ids"]}
             for p in probe_prompts(4)]
    transcript = tmp_path / "transcript.jsonl"
    transcript.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    report, _ = run_rungs(tmp_path / "run", ["special-tokens"], model=model, transcript=transcript)
    result = rung(report, "special-tokens")
    assert result.status.value == "fail", result.summary
    assert "no generated ids" in result.summary and result.evidence["past_end_of_turn"]["prompts"] == 0


@pytest.mark.parametrize("style", ["chatml", "gemma"])
def test_healthy_harness_passes(tmp_path, style):
    result = run(tmp_path, style, mode="template")
    assert result.status.value == "pass", result.summary


def test_without_a_harness_it_skips(tmp_path):
    report, _ = run_rungs(tmp_path, ["special-tokens"], model=chat_model_dir("chatml"))
    result = rung(report, "special-tokens")
    assert result.status.value == "skip" and "--harness" in result.summary


def turn_marker_bos_model(tmp_path):
    """The chatml chat model with its tokenizer's bos_token set to the turn marker, as SmolLM2 ships
    (`bos_token: <|im_start|>`): the template writes it at every turn, the tokenizer adds none."""
    import json
    import shutil

    dest = tmp_path / "model"
    shutil.copytree(chat_model_dir("chatml"), dest, ignore=shutil.ignore_patterns("manifest.json"))
    config = json.loads((dest / "tokenizer_config.json").read_text())
    config["bos_token"] = "<|im_start|>"
    (dest / "tokenizer_config.json").write_text(json.dumps(config))
    return dest


@pytest.mark.parametrize("mode, status", [("raw", "warn"), ("template", "pass")])
def test_a_turn_marker_named_bos_is_not_a_missing_bos(tmp_path, mode, status):
    from transformers import AutoTokenizer

    model = turn_marker_bos_model(tmp_path)
    assert AutoTokenizer.from_pretrained(model).bos_token == "<|im_start|>"
    spec = variant_harness(tmp_path / "h", model, mode=mode)
    report, _ = run_rungs(tmp_path / "run", ["special-tokens"], model=model, harness=spec, prompts=probe_prompts(4))
    result = rung(report, "special-tokens")
    assert result.status.value == status, result.summary
    assert "no BOS" not in result.summary
