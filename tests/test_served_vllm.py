"""vLLM (CPU) serving the fixture chat model, as users serve checkpoints: `served-format` reads the server's own
rendering from its `/tokenize` and sets it beside the checkpoint's; a `--chat-template` of another family is
the culprit with both renderings shown, the server as started from the folder is not; raw text posted to its
`/v1/completions` by a harness is the founding case over HTTP. Skips when `.ci/vllm-venv` has not run."""

from __future__ import annotations

import pytest

from families import REAL_TEMPLATES
from interface_models import chat_model_dir, probe_prompts, run_rungs
from served import serve_vllm, vllm_python, write_http_harness

pytestmark = [pytest.mark.slow, pytest.mark.served]

INTERFACE = ["load-report", "tokenizer-match", "prompt-format", "special-tokens", "generation-config",
             "batch-consistency"]


@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    if vllm_python() is None:
        pytest.skip("no vLLM virtualenv: .ci/vllm-venv creates it (5 minutes, once)")
    with serve_vllm(chat_model_dir("chatml"), tmp_path_factory.mktemp("vllm")) as running:
        yield running


def _verdicts(report):
    return {r.id: (r.status.value, r.summary) for r in report.rungs}


def test_vllm_serving_the_folder_as_it_ships_has_no_culprit(tmp_path, vllm):
    report, _ = run_rungs(tmp_path, ["served-format"], model=chat_model_dir("chatml"), endpoint=vllm.url)
    result = report.rungs[0]
    assert result.status.value in ("pass", "warn"), result.summary
    rendering = result.evidence["server_rendering"]
    assert rendering["via"] == "/tokenize" and rendering["same_as_checkpoint"] is True, rendering
    assert rendering["server_ids"] == rendering["checkpoint_ids"]
    assert {"render_template", "logprobs"} <= set(result.evidence["server_capabilities"])
    assert result.evidence["template_paths_differ"]["differing"] == 0, result.evidence["template_paths_differ"]


def test_vllm_with_another_familys_chat_template_is_the_culprit_with_both_renderings(tmp_path, vllm):
    with serve_vllm(chat_model_dir("chatml"), tmp_path, chat_template=REAL_TEMPLATES / "vicuna.jinja") as other:
        # the case's own questions, in the fixture model's domain (addition): of ladder's default ones it knows
        # few, and a build of it may answer those alike through vicuna's rendering (11/12 here: a warn, rightly)
        report, _ = run_rungs(tmp_path / "run", [*INTERFACE, "served-format"], model=chat_model_dir("chatml"),
                              endpoint=other.url, prompts=probe_prompts())
    assert report.culprit is not None and report.culprit.rung == "served-format", _verdicts(report)
    result = next(r for r in report.rungs if r.id == "served-format")
    rendering = result.evidence["server_rendering"]
    assert rendering["same_as_checkpoint"] is False and rendering["format"] == "other-format", rendering
    sides = result.evidence["side_by_side"]
    assert "ASSISTANT:" in sides["server_renders"] and "<|im_start|>" in sides["checkpoint_renders"], sides
    assert "/tokenize" in result.summary and "another template" in result.summary, result.summary


def test_raw_text_posted_to_vllm_completions_is_the_founding_case(tmp_path, vllm):
    harness = write_http_harness(tmp_path, vllm, "completions")
    report, _ = run_rungs(tmp_path, INTERFACE, model=chat_model_dir("chatml"), harness=harness)
    assert report.culprit is not None and report.culprit.rung == "prompt-format", _verdicts(report)
    result = next(r for r in report.rungs if r.id == "prompt-format")
    assert result.evidence["harness_format"] == "raw" and result.evidence["served"]["endpoint"] == "completions"


def test_messages_posted_to_vllm_chat_completions_get_no_culprit(tmp_path, vllm):
    harness = write_http_harness(tmp_path, vllm, "chat")
    report, _ = run_rungs(tmp_path, INTERFACE, model=chat_model_dir("chatml"), harness=harness)
    assert report.culprit is None, _verdicts(report)
    assert not [r.id for r in report.rungs if r.status.value == "error"], _verdicts(report)
