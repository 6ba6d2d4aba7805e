"""Harnesses that call a real server (`transformers serve` on loopback): the tap records their HTTP requests
as it records generate calls, so the founding case over HTTP (raw text posted to /v1/completions) is found
without a transcript, and the healthy twin (messages posted to /v1/chat/completions) gets no culprit."""

from __future__ import annotations

import json

import pytest

from interface_models import chat_model_dir, run_rungs
from served import complete, serve, write_http_harness, write_openai_harness, write_requests_command

pytestmark = pytest.mark.slow

INTERFACE = ["load-report", "tokenizer-match", "prompt-format", "special-tokens", "generation-config",
             "batch-consistency"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve(chat_model_dir("chatml"), tmp_path_factory.mktemp("serve")) as running:
        yield running


def _verdicts(report):
    return {r.id: (r.status.value, r.summary) for r in report.rungs}


def test_the_server_is_real_and_serves_the_fixture_model(server):
    reply = complete(server, "<|im_start|>user\nWhat is 2 plus 3?<|im_end|>\n<|im_start|>assistant\n")
    assert reply["choices"][0]["text"].strip().startswith("5"), reply


def test_raw_text_posted_to_completions_is_the_founding_case_over_http(tmp_path, server):
    harness = write_http_harness(tmp_path, server, "completions")
    report, _ = run_rungs(tmp_path, INTERFACE, model=chat_model_dir("chatml"), harness=harness)
    assert report.culprit is not None and report.culprit.rung == "prompt-format", _verdicts(report)
    result = next(r for r in report.rungs if r.id == "prompt-format")
    assert result.evidence["harness_format"] == "raw"
    assert result.evidence["served"]["endpoint"] == "completions"
    assert result.evidence["served"]["url"] == server.url + "/completions"
    sides = result.evidence["side_by_side"]
    assert sides["harness_sent"].strip() == sides["prompt"] and "<|im_start|>" in sides["template_sends"]
    from ladder.harness.run import run_function

    calls = run_function(harness, ["What is 2 plus 3?", "Say hello."]).calls
    assert [call["generate"][0]["input_text"] for call in calls] == [["What is 2 plus 3?"], ["Say hello."]]
    assert all(call["generate"][0]["http"]["endpoint"] == "completions" for call in calls)
    assert calls[0]["generate"][0]["generate_kwargs"] == {"max_tokens": 16, "temperature": 0}
    assert "sk-test-secret" not in json.dumps(calls), "headers (API keys) are never recorded"


def test_messages_posted_to_chat_completions_get_no_culprit(tmp_path, server):
    harness = write_http_harness(tmp_path, server, "chat")
    report, _ = run_rungs(tmp_path, INTERFACE, model=chat_model_dir("chatml"), harness=harness)
    assert report.culprit is None, _verdicts(report)
    result = next(r for r in report.rungs if r.id == "prompt-format")
    assert result.status.value == "pass" and "/v1/chat/completions" in result.summary, result.summary
    assert not [r.id for r in report.rungs if r.status.value == "error"], _verdicts(report)


def test_a_command_that_posts_with_requests_is_recorded_too(tmp_path, server):
    command = write_requests_command(tmp_path, server)
    report, _ = run_rungs(tmp_path, ["prompt-format"], model=chat_model_dir("chatml"), harness_cmd=command)
    result = next(r for r in report.rungs if r.id == "prompt-format")
    assert result.status.value == "fail" and result.evidence["harness_format"] == "raw", result.summary
    assert result.evidence["harness_form"] == "command"


@pytest.mark.parametrize("endpoint, verdict, form", [("completions", "fail", "raw"), ("chat", "pass", "template")])
def test_a_harness_on_the_openai_client_is_recorded(tmp_path, server, endpoint, verdict, form):
    """The `openai` client sends through httpx2 (openai 3) or httpx: the tap sees its requests as it sees
    urllib's, so the founding case through the most common client is found, and its healthy twin passes."""
    harness = write_openai_harness(tmp_path, server, endpoint)
    report, _ = run_rungs(tmp_path, ["prompt-format"], model=chat_model_dir("chatml"), harness=harness)
    result = next(r for r in report.rungs if r.id == "prompt-format")
    assert result.status.value == verdict and result.evidence["harness_format"] == form, result.summary
    assert result.evidence["served"]["endpoint"] == ("chat/completions" if endpoint == "chat" else "completions")
    assert "sk-test-secret" not in json.dumps(result.evidence)


# ---- served-format: the server against the checkpoint it is meant to serve ------------------------------


def _served_copy(source, dest, template: str | None = None):
    """A copy of a model folder to serve, its chat template swapped for `template` when given."""
    import shutil

    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("manifest.json"))
    if template is not None:
        (dest / "chat_template.jinja").write_text(template, encoding="utf-8")
    return dest


def _served_format(tmp_path, server, model):
    report, _ = run_rungs(tmp_path, ["served-format"], model=model, endpoint=server.url, served_model=server.model)
    return next(r for r in report.rungs if r.id == "served-format")


def test_a_server_that_serves_the_checkpoint_as_it_ships_passes(tmp_path, server):
    result = _served_format(tmp_path, server, chat_model_dir("chatml"))
    assert result.status.value == "pass", (result.summary, result.evidence)
    assert result.evidence["logprobs"].startswith("ignored"), "transformers serve ignores logprobs: said, not hidden"
    tokens = result.evidence["prompt_tokens"]
    assert tokens["server_chat"] == tokens["checkpoint_template"]


def test_a_server_with_another_familys_template_fails_with_both_renderings(tmp_path):
    from families import real_template

    model = chat_model_dir("chatml")
    folder = _served_copy(model, tmp_path / "served", real_template("vicuna"))
    with serve(folder, tmp_path) as other:
        result = _served_format(tmp_path / "case", other, model)
    assert result.status.value == "fail" and "another template" in result.summary, result.summary
    sides = result.evidence["side_by_side"]
    assert "<|im_start|>" in sides["checkpoint_renders"] and sides["server_chat_reply"] != \
        sides["checkpoint_format_on_server"]
    tokens = result.evidence["prompt_tokens"]
    assert tokens["server_chat"] != tokens["checkpoint_template"]


def test_a_server_that_serves_the_base_not_the_fine_tune_fails(tmp_path):
    from interface_models import base_model_dir

    from ladder.fixtures.tokenizer import get_style

    # the base as published has no template; served with the fine-tune's, as a wrong deployment would
    base = _served_copy(base_model_dir(), tmp_path / "served-base", get_style("chatml").chat_template)
    with serve(base, tmp_path) as wrong:
        result = _served_format(tmp_path / "case", wrong, chat_model_dir("chatml"))
    assert result.status.value == "fail" and "does not run the checkpoint" in result.summary, result.summary
    confident = [d for d in result.evidence["departures"] if d["checkpoint_nats_below_its_choice"] > 2.3]
    assert len(confident) >= 2, result.evidence["departures"]  # the base's tokens, not near ties of the fine-tune


def test_without_an_endpoint_served_format_skips_naming_the_flag(tmp_path):
    report, _ = run_rungs(tmp_path, ["served-format"], model=chat_model_dir("chatml"))
    result = report.rungs[0]
    assert result.status.value == "skip" and "--endpoint URL" in result.summary


def test_a_server_whose_stop_set_lacks_the_end_of_turn_token_fails(tmp_path):
    import json as json_module

    model = chat_model_dir("chatml")
    folder = _served_copy(model, tmp_path / "served-no-eot")
    for name in ("generation_config.json", "config.json"):
        path = folder / name
        data = json_module.loads(path.read_text())
        data["eos_token_id"] = 2  # the tokenizer's eos only: <|im_end|> (3 or 4) dropped, as vllm#45591 does
        path.write_text(json_module.dumps(data))
    with serve(folder, tmp_path) as server:
        result = _served_format(tmp_path / "case", server, model)
    assert result.status.value == "fail" and "does not stop where the checkpoint does" in result.summary, \
        (result.summary, result.evidence.get("stops"))


def _sampling_copy(model, dest):
    """A served copy whose generation_config.json samples (as a config left with do_sample after training)."""
    import json as json_module

    folder = _served_copy(model, dest)
    path = folder / "generation_config.json"
    config = json_module.loads(path.read_text())
    config.update(do_sample=True, temperature=5.0, top_k=0, top_p=1.0)
    path.write_text(json_module.dumps(config))
    return folder


def test_a_server_that_samples_unset_temperatures_fails_a_harness_that_leaves_it_unset(tmp_path):
    model = chat_model_dir("chatml")
    with serve(_sampling_copy(model, tmp_path / "served-sampling"), tmp_path) as server:
        harness = write_http_harness(tmp_path / "case", server, "chat", greedy=False)
        report, _ = run_rungs(tmp_path / "case", ["prompt-format", "served-format"], model=model, harness=harness,
                              endpoint=server.url, served_model=server.model)
        result = next(r for r in report.rungs if r.id == "served-format")
        assert result.status.value == "fail" and "leave temperature unset" in result.summary, result.summary
        assert result.evidence["unset_temperature"]["replies_vary"]
        # the same server, no harness of the user's that leaves it unset: a hazard off the path, a warn
        alone = _served_format(tmp_path / "alone", server, model)
        assert alone.status.value == "warn" and "sampled by the server" in alone.summary, alone.summary


def test_a_greedy_harness_on_a_greedy_server_sees_no_sampling(tmp_path, server):
    result = _served_format(tmp_path, server, chat_model_dir("chatml"))
    assert result.evidence["unset_temperature"]["replies_vary"] is False
