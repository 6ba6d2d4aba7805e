"""weights-moved: an adapter saved but never applied (fails), a zero adapter (fails), a merged adapter and
a full fine-tune (pass), a config naming frozen layers that moved (fails), and the skip."""

from __future__ import annotations

import pytest

from internals_models import adapter_dir, base_model_dir, chat_model_dir, run_rung
from ladder.models import Status
from ladder.probes.weights_moved import group_of, intentions, layer_of, lora_scale, matches


def test_config_intentions_are_read():
    found = intentions({"model": {"freeze_layers": [0, 1], "trainable_modules": ["mlp"]},
                        "freeze_embeddings": True, "lr": 1e-4}, "train.yaml")
    by_key = {i["key"]: i for i in found}
    assert by_key["model.freeze_layers"] == {"source": "train.yaml", "key": "model.freeze_layers",
                                             "expect": "frozen", "layers": [0, 1]}
    assert by_key["model.trainable_modules"]["expect"] == "trained"
    assert by_key["freeze_embeddings"]["patterns"] == ["embedding"]
    assert matches("model.embed_tokens.weight", None, {"patterns": ["embed"]})
    assert matches("model.layers.1.mlp.up_proj.weight", 1, by_key["model.freeze_layers"])
    assert not matches("model.layers.2.mlp.up_proj.weight", 2, by_key["model.freeze_layers"])


def test_parameter_names():
    assert layer_of("model.layers.11.self_attn.q_proj.weight", "model.layers") == 11
    assert layer_of("model.norm.weight", "model.layers") is None
    assert group_of("model.layers.0.self_attn.q_proj.weight") == "attention"
    assert group_of("model.layers.0.mlp.down_proj.weight") == "mlp"
    assert group_of("model.layers.0.input_layernorm.weight") == "norm"
    assert lora_scale({"r": 4, "lora_alpha": 8}) == 2.0
    assert lora_scale({"r": 4, "lora_alpha": 8, "use_rslora": True}) == 4.0


@pytest.mark.slow
def test_adapter_saved_but_never_applied_fails(tmp_path):
    result = run_rung("weights-moved", tmp_path, model=adapter_dir("unapplied"), base=chat_model_dir("chatml"))
    assert result.status == Status.FAIL, result.summary
    assert "not applied or merged" in result.summary and "identical" in result.summary
    ev = result.evidence
    assert ev["adapter"]["lora_B_norm_total"] > 0
    assert ev["max_logit_difference_to_base"] == 0.0
    assert ev["series"]["relative_change"] == [0.0] * ev["layers"]


@pytest.mark.slow
def test_zero_adapter_fails_even_without_base(tmp_path):
    result = run_rung("weights-moved", tmp_path, model=adapter_dir("zero"))
    assert result.status == Status.FAIL, result.summary
    assert "weights are zero" in result.summary


@pytest.mark.slow
def test_trained_adapter_without_base_cannot_tell(tmp_path):
    result = run_rung("weights-moved", tmp_path, model=adapter_dir("unapplied"))
    assert result.status == Status.WARN, result.summary
    assert "--base" in result.summary


@pytest.mark.slow
def test_merged_adapter_passes(tmp_path):
    result = run_rung("weights-moved", tmp_path, model=adapter_dir("merged"), base=chat_model_dir("chatml"))
    assert result.status == Status.PASS, (result.summary, result.evidence)
    assert result.evidence["adapter_merge"]["merged"] == 8  # q and v of 4 layers
    change = result.evidence["series"]["relative_change_attention"]
    assert all(v > 0 for v in change)
    assert result.evidence["series"]["relative_change_mlp"] == [0.0] * 4  # the adapter left the MLPs alone
    assert result.evidence["base_read"] == "streamed from its safetensors", "no second model in memory"


@pytest.mark.slow
@pytest.mark.parametrize("style", ["chatml", "gemma"])
def test_full_fine_tune_passes(tmp_path, style):
    result = run_rung("weights-moved", tmp_path, model=chat_model_dir(style), base=base_model_dir(style))
    assert result.status == Status.PASS, (result.summary, result.evidence)
    assert all(v > 1e-3 for v in result.evidence["series"]["relative_change"])
    assert result.evidence["flagged"] == []


@pytest.mark.slow
def test_layers_the_config_froze_moved(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("learning_rate: 1e-3\nfreeze_layers: [0, 1]\n")
    result = run_rung("weights-moved", tmp_path, model=chat_model_dir("chatml"), base=base_model_dir("chatml"),
                      train_config=config)
    assert result.status == Status.FAIL, result.summary
    assert "moved although frozen" in result.summary
    assert result.evidence["flagged"] == [0, 1]


def test_skips_without_base_or_adapter(tmp_path):
    result = run_rung("weights-moved", tmp_path, model=tmp_path)
    assert result.status == Status.SKIP and "--base" in result.summary
