"""load-report: weights left random, an adapter never applied, the wrong checkpoint; the healthy control."""

from __future__ import annotations

import json
import shutil

import pytest

from interface_models import chat_model_dir, probe_prompts, run_rungs, rung, variant_harness

pytestmark = pytest.mark.slow


def copy_model(tmp_path, name="model"):
    dest = tmp_path / name
    shutil.copytree(chat_model_dir("chatml"), dest, ignore=shutil.ignore_patterns("manifest.json"))
    return dest


def test_untied_lm_head_missing_from_the_checkpoint_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    model = copy_model(tmp_path)
    weights = load_file(model / "model.safetensors")
    weights.pop("lm_head.weight")
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    report, _ = run_rungs(tmp_path / "run", ["load-report"], model=model)
    result = rung(report, "load-report")
    assert result.status.value == "fail", result.summary
    assert result.evidence["missing_keys"] == ["lm_head.weight"] and "lm_head.weight" in result.summary


def test_adapter_in_the_checkpoint_that_the_harness_never_applied(tmp_path):
    model = copy_model(tmp_path)
    (model / "adapter").mkdir()
    (model / "adapter" / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "base_model_name_or_path": str(model), "r": 8, "target_modules": ["q_proj"]}))
    harness = variant_harness(tmp_path, model, mode="template")
    report, _ = run_rungs(tmp_path / "run", ["load-report"], model=model, harness=harness, prompts=probe_prompts(2))
    result = rung(report, "load-report")
    assert result.status.value == "fail", result.summary
    assert "adapter" in result.summary and result.evidence["adapter_applied_in_harness"] is False


@pytest.mark.parametrize("base_of_adapter, status", [("model", "fail"), ("some-other-model", "pass")])
def test_an_adapter_beside_the_checkpoint_counts_only_when_it_names_it_as_its_base(tmp_path, base_of_adapter,
                                                                                     status):
    """A models folder holds adapters of other experiments too: a sibling adapter is this checkpoint's
    unapplied fine-tune only when its base_model_name_or_path is this checkpoint."""
    from ladder.probes.load_report import adapter_dirs

    models = tmp_path / "models"
    model = copy_model(models)
    (models / "lora").mkdir()
    (models / "lora" / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "base_model_name_or_path": f"../{base_of_adapter}", "r": 8}))
    assert bool(adapter_dirs(model)) == (status == "fail")
    harness = variant_harness(tmp_path / "h", model, mode="template")
    report, _ = run_rungs(tmp_path / "run", ["load-report"], model=model, harness=harness, prompts=probe_prompts(2))
    assert rung(report, "load-report").status.value == status, rung(report, "load-report").summary


def test_harness_loading_another_checkpoint_is_named(tmp_path):
    from ladder.fixtures.models import base_model_dir

    model = copy_model(tmp_path)
    other = tmp_path / "other"
    shutil.copytree(base_model_dir("chatml"), other)
    harness = variant_harness(tmp_path, other, mode="template")
    report, _ = run_rungs(tmp_path / "run", ["load-report"], model=model, harness=harness, prompts=probe_prompts(2))
    result = rung(report, "load-report")
    assert result.status.value == "fail" and str(other) in result.summary and "differ" in result.summary


def test_harness_loading_a_copy_of_the_checkpoint_passes(tmp_path):
    """The same weights at another path (a copy on a faster disk) are the case's model: nothing changes."""
    model = copy_model(tmp_path)
    other = copy_model(tmp_path, "copy")
    harness = variant_harness(tmp_path, other, mode="template")
    report, _ = run_rungs(tmp_path / "run", ["load-report"], model=model, harness=harness, prompts=probe_prompts(2))
    result = rung(report, "load-report")
    assert result.status.value == "pass", result.summary
    assert result.evidence["harness_loaded_same_weights_from"] == [str(other)]


def test_healthy_checkpoint_passes(tmp_path):
    model = chat_model_dir("chatml")
    harness = variant_harness(tmp_path, model, mode="template")
    report, _ = run_rungs(tmp_path / "run", ["load-report"], model=model, harness=harness, prompts=probe_prompts(2))
    result = rung(report, "load-report")
    assert result.status.value == "pass", result.summary
    stored = result.evidence["dtype"]["on_disk"]
    assert list(stored) == ["torch.float32"] and stored["torch.float32"] > 10
    assert result.evidence["harness_loaded"] == [str(model)]


def test_without_a_model_it_skips(tmp_path):
    report, _ = run_rungs(tmp_path, ["load-report"])
    result = rung(report, "load-report")
    assert result.status.value == "skip" and "--model" in result.summary
