"""Chat template analysis by rendering, on the real templates in ../shared and the fixture factory's two styles."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest

from ladder.fixtures.tokenizer import STYLES, get_style
from ladder.templates import _clock, analyse, classify, renderer_for_template

REAL = Path(__file__).resolve().parents[2] / "shared" / "real_chat_templates" / "chat_templates"
TRANSCRIBED = Path(__file__).resolve().parent / "templates"  # more families' templates (see its README)
BOS, EOS = "<s>", "</s>"
QUESTION = "What is 2 plus 3?"


def _renderers():
    found = {}
    for path in sorted(REAL.glob("*.jinja")):
        text = path.read_text(encoding="utf-8")
        found[path.stem] = renderer_for_template(text, BOS, EOS)
        # the source repository's own usage strips its indentation and newlines
        found[f"{path.stem}-compact"] = renderer_for_template(text.replace("    ", "").replace("\n", ""), BOS, EOS)
    for path in sorted(TRANSCRIBED.glob("*.jinja")):
        found[path.stem] = renderer_for_template(path.read_text(encoding="utf-8"), BOS, EOS)
    for style in map(get_style, STYLES):
        found[f"fixture-{style.name}"] = renderer_for_template(style.chat_template, BOS, EOS)
    return found


RENDERERS = _renderers()


def analyses() -> dict:
    """Analysed when a test runs, not at collection: Llama-3.1's and Granite's templates render today's date,
    so an analysis from before midnight does not match a rendering after it."""
    return {name: analyse(render) for name, render in RENDERERS.items()}


def user(text):
    return [{"role": "user", "content": text}]


def test_the_real_templates_are_there():
    assert len(list(REAL.glob("*.jinja"))) >= 10


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_markers_and_end_of_turn_are_read_off_the_rendering(name):
    render, analysis = RENDERERS[name], analyse(RENDERERS[name])
    sends = render(user(QUESTION), True)
    markers = analysis.markers
    assert "user_open" in markers, "every template frames the user's turn somehow"
    assert markers["user_open"] in sends and sends.index(markers["user_open"]) < sends.index(QUESTION)
    if "generation_prompt" in markers:
        assert sends.rstrip().endswith(markers["generation_prompt"])
        assert markers["generation_prompt"] not in render(user(QUESTION), False)
    pair = render(user(QUESTION) + [{"role": "assistant", "content": "five"}], False)
    if analysis.end_of_turn is not None:
        assert pair.split("five", 1)[1].lstrip().startswith(analysis.end_of_turn)
    else:
        assert not pair.split("five", 1)[1].strip(), "no end-of-turn string only when nothing follows the reply"


@pytest.mark.parametrize("name", sorted(RENDERERS))
def test_what_a_harness_sent_is_classified(name):
    render, analysis = RENDERERS[name], analyse(RENDERERS[name])
    sends = render(user(QUESTION), True)

    def kind(text, prompt=QUESTION):
        return classify(text, analysis, prompt=prompt, bos_token=BOS, eos_token=EOS)

    assert kind(sends).kind == "template"
    assert kind(sends).user_content.strip() == QUESTION
    assert kind(QUESTION).kind == "raw"
    assert kind(BOS + QUESTION).kind == "raw", "a BOS the tokenizer adds does not make a format"
    assert kind(render(user(sends), True)).kind == "template-twice"
    doubled = kind(BOS + sends)
    assert doubled.kind == "template"
    if sends.lstrip().startswith(BOS):
        assert doubled.extra_leading_bos == 1
    if analysis.generation_prompt.strip():
        assert kind(render(user(QUESTION), False)).kind == "no-generation-prompt"
    system = render([{"role": "system", "content": "Be brief."}] + user(QUESTION), True)
    assert kind(system).kind == "template", "a system message of the harness's own is still the template"
    prefilled = kind(sends + "The answer is")
    assert (prefilled.kind, prefilled.reply_prefill) == ("template", "The answer is"), \
        "an answer prefix after the template's prompt is the template, used on purpose"
    if analysis.generation_prompt.strip():
        assert kind(render(user(QUESTION), False) + "The answer is").kind != "template"
    assert kind(QUESTION + " The answer is").kind != "template"
    few_shot = kind(render([*user("What is 2 plus 2?"), {"role": "assistant", "content": "4"}, *user(QUESTION)], True))
    assert (few_shot.kind, few_shot.user_content.strip()) == ("template", QUESTION), \
        "a few-shot conversation is the template once, not a rendered prompt inside a message"
    assert kind("Question: " + QUESTION + "\nAnswer:").kind == "other-format"
    # a transcript without the user's prompt: classified from the text alone
    assert classify(sends, analysis, bos_token=BOS, eos_token=EOS).kind == "template"
    assert classify(QUESTION, analysis, bos_token=BOS, eos_token=EOS).kind == "raw"


def _bare(text: str) -> str:
    return re.sub(r"\s+", "", text.replace(BOS, ""))


@pytest.mark.parametrize("eos", [EOS, "<|endoftext|>"])
def test_a_marker_shared_in_part_is_not_split(eos):
    """Phi-3 closes the user's turn with "<|end|>\\n" and then opens the reply ("<|assistant|>") or, without a
    generation prompt, ends with eos: the renderings share "<|end|>\\n<", which is not the turn's close."""
    analysis = analyse(renderer_for_template((TRANSCRIBED / "phi-3.jinja").read_text(encoding="utf-8"), BOS, eos))
    assert (analysis.preamble, analysis.user_open, analysis.user_close, analysis.generation_prompt) == \
        ("", "<|user|>\n", "<|end|>\n", "<|assistant|>\n")
    assert analysis.end_of_turn == "<|end|>"


DATED = ("llama-3.1-instruct", "granite-3")  # their templates write today's date (strftime_now)


@pytest.mark.parametrize("name", DATED)
def test_a_prompt_rendered_on_another_day_is_the_template(name):
    """A transcript recorded yesterday, a server in another time zone, a run across midnight: the date the
    template wrote differs from today's, and the prompt is still the template's."""
    render, analysis = RENDERERS[name], analyse(RENDERERS[name])
    with _clock(datetime(2024, 7, 26, 13, 5)):
        yesterday = render(user(QUESTION), True)
    assert "2024" in yesterday and yesterday != render(user(QUESTION), True), "the template writes the date"
    found = classify(yesterday, analysis, prompt=QUESTION, bos_token=BOS, eos_token=EOS)
    assert (found.kind, found.user_content.strip()) == ("template", QUESTION)
    assert classify(QUESTION, analysis, prompt=QUESTION, bos_token=BOS, eos_token=EOS).kind == "raw"
    other = RENDERERS["fixture-chatml"](user(QUESTION), True)
    assert classify(other, analysis, prompt=QUESTION, bos_token=BOS, eos_token=EOS).kind != "template"


def test_another_familys_template_is_not_taken_for_this_one():
    confusions = []
    every = analyses()
    for mine, analysis in every.items():
        for theirs, render in RENDERERS.items():
            if mine == theirs:
                continue
            sent = render(user(QUESTION), True)
            found = classify(sent, analysis, prompt=QUESTION, bos_token=BOS, eos_token=EOS)
            same_text = _bare(sent) == _bare(RENDERERS[mine](user(QUESTION), True))
            if found.kind == "template" and not same_text and found.shape != "system+user":
                confusions.append((mine, theirs))
    # allowed only where both render the same text, or "theirs" is mine plus a default system prompt
    assert confusions == []
    chatml_vs_gemma = classify(RENDERERS["fixture-gemma"](user(QUESTION), True), every["fixture-chatml"],
                               prompt=QUESTION, bos_token=BOS, eos_token=EOS)
    assert chatml_vs_gemma.kind == "other-format"


def test_fixture_styles_markers():
    chatml, gemma = analyse(RENDERERS["fixture-chatml"]), analyse(RENDERERS["fixture-gemma"])
    assert chatml.end_of_turn == get_style("chatml").turn_end
    assert gemma.end_of_turn == get_style("gemma").turn_end
    assert gemma.preamble == BOS and chatml.preamble == ""
    assert chatml.generation_prompt == get_style("chatml").generation_prompt
