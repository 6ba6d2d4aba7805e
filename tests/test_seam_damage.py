"""seam-damage: the outlier maths on synthetic series, a real frankenmerge (fails), healthy models
of both template styles and a deeper random model (pass), the base comparison, and the skip."""

from __future__ import annotations

import math

import pytest

from internals_models import chat_model_dir, deep_model_dir, frankenmerge_dir, run_rung
from ladder.models import Status
from ladder.probes.seam_damage import (SeamDamageParams, activation_outliers, duplicate_sources, mapping_seams,
                                       structural_seams)


def smooth_series(layers: int, jump_at: int | None = None) -> dict[str, list[float]]:
    """Per-layer series shaped like a healthy deep model's (slow drift, mild noise), optionally a seam."""
    lens = [6.0 - 4.0 * i / layers + 0.02 * math.sin(3 * i) for i in range(layers)]
    update = [0.9 if i == 0 else 0.25 + 0.02 * math.cos(2 * i) for i in range(layers)]
    cosine = [0.5 if i == 0 else 0.95 + 0.005 * math.sin(i) for i in range(layers)]
    if jump_at is not None:
        lens = [v + (1.5 if i >= jump_at else 0.0) for i, v in enumerate(lens)]
        update[jump_at] = 1.4
        cosine[jump_at] = 0.4
    series = {"lens_loss": lens, "relative_update": update, "cosine_to_previous": cosine,
              "cosine_drop": [1 - c for c in cosine]}
    series["lens_loss_delta"] = [float("nan")] + [lens[i] - lens[i - 1] for i in range(1, layers)]
    return series


@pytest.mark.parametrize("layers", [8, 16, 32, 80])
def test_smooth_series_has_no_seam(layers):
    assert activation_outliers(smooth_series(layers), SeamDamageParams()) == {}


@pytest.mark.parametrize("layers,jump_at", [(8, 4), (32, 17), (80, 41)])
def test_a_jump_is_flagged_at_its_layer(layers, jump_at):
    found = activation_outliers(smooth_series(layers, jump_at), SeamDamageParams())
    assert found, "a seam must be flagged"
    assert all(indices == [jump_at] for indices in found.values()), found


def test_edges_and_shallow_models_are_left_out():
    series = smooth_series(8, jump_at=7)  # the last layer: left out (edge_layers=1)
    assert activation_outliers(series, SeamDamageParams()) == {}
    assert activation_outliers(smooth_series(4, jump_at=2), SeamDamageParams()) == {}  # under min_layers


def test_copied_blocks_and_base_mapping():
    a, b, c, d = [1.0, 2.0], [3.0, 1.0], [0.5, 0.5], [9.0, 1.0]
    assert duplicate_sources([a, b, c, d, b, c, d], 1e-4) == [None, None, None, None, 1, 2, 3]
    assert structural_seams([None, None, None, None, 1, 2, 3]) == [4]
    assert structural_seams([None, None, 0, 0]) == [2, 3]  # one layer repeated twice: two seams
    assert mapping_seams([0, 1, 2, 3, 1, 2, 3]) == [4]
    assert mapping_seams([0, 1, 2, 3]) == []
    assert mapping_seams([None, None, 2, 3]) == []


# ---- on models --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_frankenmerge_fails_at_the_seam(tmp_path):
    result = run_rung("seam-damage", tmp_path, model=frankenmerge_dir("chatml"))
    assert result.status == Status.FAIL, result.summary
    assert 4 in result.evidence["flagged"], result.evidence
    assert result.evidence["copied_from"] == [-1, -1, -1, -1, 1, 2, 3]
    series = result.evidence["series"]
    assert set(series) >= {"residual_norm", "cosine_to_previous", "relative_update", "lens_loss"}
    assert all(len(values) == 7 for values in series.values())


@pytest.mark.slow
def test_frankenmerge_against_its_base_names_the_layers(tmp_path):
    result = run_rung("seam-damage", tmp_path, model=frankenmerge_dir("chatml"), base=chat_model_dir("chatml"))
    assert result.status == Status.FAIL, result.summary
    assert result.evidence["base_layer_of"] == [0, 1, 2, 3, 1, 2, 3]
    assert result.evidence["base_layers"] == 4 and 4 in result.evidence["flagged"]
    assert "base_lens_loss" in result.evidence["series"]


@pytest.mark.slow
@pytest.mark.parametrize("style", ["chatml", "gemma"])
def test_healthy_chat_model_passes(tmp_path, style):
    result = run_rung("seam-damage", tmp_path, model=chat_model_dir(style))
    assert result.status == Status.PASS, (result.summary, result.evidence)
    assert result.evidence["flagged"] == []


@pytest.mark.slow
def test_deeper_healthy_model_passes_the_outlier_test(tmp_path):
    result = run_rung("seam-damage", tmp_path, model=deep_model_dir(8))
    assert result.status == Status.PASS, (result.summary, result.evidence)
    assert "too few" not in result.summary


def test_skips_without_a_model(tmp_path):
    result = run_rung("seam-damage", tmp_path)
    assert result.status == Status.SKIP
    assert "--model" in result.summary


@pytest.mark.slow
def test_the_factory_frankenmerge_is_damaged_with_margin(tmp_path):
    """The case's copied layers make its replies measurably worse than the same stack with the copies
    bypassed (the model before the merge): 0.93 nats/token here, against the 0.1 that counts as damage.
    The verdict rests on that direct comparison, not on where a logit-lens minimum falls."""
    from ladder.case import load_case
    from ladder.fixtures import cases

    case = load_case(cases.build_case("frankenmerge") / "case.yaml")
    result = run_rung("seam-damage", tmp_path, model=case.model, data=case.data, eval_data=case.eval_data)
    assert result.status == Status.FAIL, result.summary
    merged = result.evidence["loss_without_copied_layers"]
    assert merged["on"] == "your data's replies" and merged["copied_layers"] == [2, 4]
    assert merged["rise"] >= 3 * SeamDamageParams().lens_jump, merged
    assert "with the copies bypassed" in result.summary


@pytest.mark.slow
def test_the_base_is_read_from_its_files_unless_a_seam_needs_its_series(tmp_path):
    """Matching the model's layers against the base reads the base's tensors one at a time from its files (the
    fingerprints a loaded base gives); a healthy fine-tune (no seam, no layer that stands out) never has the base
    loaded beside it, and the frankenmerge, whose seams it explains, does."""
    from interface_models import rungs_runner

    from ladder.backends.hf import HFModel, StreamedWeights
    from ladder.fixtures import models
    from ladder.probes.seam_damage import layer_fingerprints, streamed_fingerprints

    base_dir, tuned_dir = models.base_model_dir("chatml"), chat_model_dir("chatml")
    base, tuned = HFModel.load(str(base_dir)), HFModel.load(str(tuned_dir))
    try:
        streamed = streamed_fingerprints(tuned.network, StreamedWeights(str(base_dir)))
        loaded = layer_fingerprints(base.network)
        assert len(streamed) == len(loaded) == 4
        assert all(a == pytest.approx(b, rel=1e-6) for a, b in zip(streamed, loaded))
    finally:
        base.close()
        tuned.close()
    for model, its_base, loads, status, mapping in ((tuned_dir, base_dir, 0, "pass", [-1] * 4),
                                                    (frankenmerge_dir("chatml"), tuned_dir, 1, "fail",
                                                     [0, 1, 2, 3, 1, 2, 3])):
        runner = rungs_runner(tmp_path / model.name, ["seam-damage"], model=model, base=its_base)
        report = runner.run()
        assert report.rungs[-1].status.value == status, report.rungs[-1].summary
        assert runner.resources.builds.get("hf:base", 0) == loads, model
        assert report.rungs[-1].evidence["base_layer_of"] == mapping


@pytest.mark.parametrize("architecture", ["llama", "qwen2", "gpt2", "gpt_neox", "gemma", "phi3", "olmo"])
def test_streamed_fingerprints_match_the_loaded_model_of_each_architecture(tmp_path, architecture):
    """The base's layer fingerprints read tensor by tensor from its files are the ones its loaded layers give,
    whatever the model type's module names (gpt2's `transformer.h`, gpt_neox's fused qkv) and head tying; a
    checkpoint whose names are not the model's (another architecture) is not streamed."""
    import torch
    from transformers import AutoModelForCausalLM

    from ladder.backends.hf import StreamedWeights
    from ladder.fixtures.train import ModelShape
    from ladder.probes.seam_damage import layer_fingerprints, streamed_fingerprints

    torch.manual_seed(0)
    config = ModelShape(layers=3, hidden=32, intermediate=64, architecture=architecture).model_config(64, 1, [2], 0)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(tmp_path / "base")
    streamed = streamed_fingerprints(model, StreamedWeights(str(tmp_path / "base")))
    loaded = layer_fingerprints(model)
    assert len(streamed) == len(loaded) == 3
    assert all(a == pytest.approx(b, rel=1e-6, abs=1e-7) for a, b in zip(streamed, loaded))
    other = "gpt2" if architecture != "gpt2" else "llama"
    foreign = AutoModelForCausalLM.from_config(
        ModelShape(layers=3, hidden=32, intermediate=64, architecture=other).model_config(64, 1, [2], 0))
    assert streamed_fingerprints(foreign, StreamedWeights(str(tmp_path / "base"))) == []
