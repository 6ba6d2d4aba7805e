"""numerics: fp16 overflow of a checkpoint stored in float16 (fails), the healthy model in float32 and
float16 (passes), NaN weights (fails), dropout on during the harness's calls (fails), and the skip."""

from __future__ import annotations

import shutil

import pytest

from internals_models import _copy_tokenizer_files, chat_model_dir, fp16_healthy_dir, fp16_overflow_dir, run_rung
from ladder.models import Status


@pytest.mark.slow
def test_fp16_overflow_fails_with_the_layers(tmp_path):
    result = run_rung("numerics", tmp_path, model=fp16_overflow_dir("chatml"))
    assert result.status == Status.FAIL, result.summary
    ev = result.evidence
    assert ev["model_dtype"] == "float16" and ev["compared_dtypes"] == ["float16"]
    assert "float16 diverges from float32" in result.summary
    assert ev["flagged"], "the overflowing layers must be named"
    over = ev["series"]["max_abs_float16"]
    assert any(v is None or v >= 65504 for v in over)  # inf (None in JSON) or at the range
    assert max(v for v in ev["series"]["max_abs_float32"] if v is not None) > 65504  # float32 holds it


@pytest.mark.slow
@pytest.mark.parametrize("style", ["chatml", "gemma"])
def test_healthy_model_passes_in_float32_and_float16(tmp_path, style):
    result = run_rung("numerics", tmp_path, params={"dtypes": ["float16", "bfloat16"]},
                      model=chat_model_dir(style))
    assert result.status == Status.PASS, (result.summary, result.evidence)
    assert result.evidence["compared_dtypes"] == ["bfloat16", "float16"]
    assert result.evidence["attention"]["kl_eager_sdpa"] < 1e-3
    assert "not checked" in " ".join(result.evidence["notes"])  # no harness: says what it did not check
    # eager vs SDPA on two prompts, not the batch: the most padded (shortest) and the least padded (longest)
    from ladder.backends.hf import HFModel
    from ladder.harness import DEFAULT_PROMPTS

    hf = HFModel.load(str(chat_model_dir(style)))
    try:
        lengths = {p: len(hf.render([{"role": "user", "content": p}])) for p, _ in DEFAULT_PROMPTS[:8]}
    finally:
        hf.close()
    compared = result.evidence["attention"]["prompts"]
    assert len(compared) == 2
    assert sorted(lengths[p] for p in compared) == [min(lengths.values()), max(lengths.values())]
    assert result.evidence["float32_reference_prompts"] == 8  # float16 and bfloat16 on the path: the batch


@pytest.mark.slow
def test_a_float32_model_with_no_reduced_precision_on_its_path_is_compared_on_few_prompts(tmp_path):
    """With only the tried precisions (two prompts) and the attention comparison (two more) to compare, the
    float32 reference runs on those rows, not the whole batch (the tried precisions' own rows widen it)."""
    few = run_rung("numerics", tmp_path, model=chat_model_dir("chatml"))
    assert few.status == Status.PASS, few.summary
    assert few.evidence["compared_dtypes"] == [] and few.evidence["tried_dtypes"] == ["bfloat16", "float16"]
    assert few.evidence["float32_reference_prompts"] <= 4
    whole = run_rung("numerics", tmp_path, params={"probe_dtype_prompts": 8}, model=chat_model_dir("chatml"))
    assert whole.evidence["float32_reference_prompts"] == 8
    for name in ("bfloat16", "float16"):  # the first two prompts' KL is of the same order as the batch's
        assert few.evidence["dtypes"][name]["kl_from_float32"] < 1e-2


@pytest.mark.slow
def test_checkpoint_stored_in_float16_without_overflow_passes(tmp_path):
    result = run_rung("numerics", tmp_path, model=fp16_healthy_dir("chatml"))
    assert result.status == Status.PASS, (result.summary, result.evidence)
    assert result.evidence["dtypes"]["float16"]["kl_from_float32"] < 0.05


@pytest.mark.slow
def test_nan_weights_are_named(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    source = chat_model_dir("chatml")
    dest = tmp_path / "nan-model"
    dest.mkdir()
    shutil.copy2(source / "config.json", dest / "config.json")
    _copy_tokenizer_files(source, dest)
    tensors = load_file(str(source / "model.safetensors"))
    name = "model.layers.2.mlp.down_proj.weight"
    tensors[name][0, 0] = float("nan")
    save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})
    result = run_rung("numerics", tmp_path, model=dest)
    assert result.status == Status.FAIL
    assert result.evidence["nonfinite_weights"][0]["tensor"] == name
    assert torch.isnan(tensors[name]).sum() == 1


TRAIN_MODE_HARNESS = '''
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL = {model!r}
_tok = AutoTokenizer.from_pretrained(MODEL)
_model = AutoModelForCausalLM.from_pretrained(MODEL, attention_dropout=0.3)
_model.train()  # the bug: never switched to eval


def ask(prompt):
    enc = _tok.apply_chat_template([{{"role": "user", "content": prompt}}], add_generation_prompt=True,
                                   return_tensors="pt", return_dict=True)
    out = _model.generate(**enc, max_new_tokens=4, do_sample=False)
    return _tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
'''


@pytest.mark.slow
def test_harness_in_training_mode_fails(tmp_path):
    """The tap's recordings (shared through the run's resources) say the model was in training mode."""
    import yaml

    from ladder.case import Case
    from ladder.loader import load_ladder
    from ladder.runner import Runner

    model = chat_model_dir("chatml")
    harness = tmp_path / "harness.py"
    harness.write_text(TRAIN_MODE_HARNESS.format(model=str(model)), encoding="utf-8")
    rungs = [{"id": "prompt-format", "title": "t", "tier": "interface", "probe": "prompt-format", "why": "w",
              "fix": "f"},
             {"id": "numerics", "title": "t", "tier": "numerics", "probe": "numerics", "why": "w", "fix": "f"}]
    ladder_file = tmp_path / "l.yaml"
    ladder_file.write_text(yaml.safe_dump({"name": "t", "rungs": rungs}))
    case = Case(model=str(model), harness=f"{harness}:ask", prompts=[{"prompt": "What is 2 plus 3?"}])
    report = Runner(load_ladder(ladder_file), case, keep_going=True).run()
    result = {r.id: r for r in report.rungs}["numerics"]
    assert result.status == Status.FAIL, result.summary
    assert "training mode" in result.summary
    assert result.evidence["harness"]["training_calls"] >= 1


def test_skips_without_a_model(tmp_path):
    result = run_rung("numerics", tmp_path)
    assert result.status == Status.SKIP and "--model" in result.summary


@pytest.mark.slow
@pytest.mark.parametrize("style", ["chatml", "gemma"])
def test_reduced_precision_block_by_block_equals_a_whole_copy_and_leaves_the_weights(style):
    """The float16/bfloat16 pass casts one block at a time instead of copying the model: the logits and
    per-layer maxima are those of a whole copy cast to the dtype, and the model's own tensors are untouched."""
    import copy

    import torch

    from ladder.backends.hf import HFModel
    from ladder.harness import DEFAULT_PROMPTS
    from ladder.internals import probe_batch
    from ladder.probes.numerics import forward_max_abs, run_in_dtype

    hf = HFModel.load(str(chat_model_dir(style)))
    batch = probe_batch(hf, [prompt for prompt, _ in DEFAULT_PROMPTS])
    mask = batch.attention_mask.bool()
    tensors = {name: (tensor, tensor.clone()) for name, tensor in hf.network.state_dict(keep_vars=True).items()}
    for dtype in (torch.float16, torch.bfloat16):
        whole_logits, whole_maxima = forward_max_abs(copy.deepcopy(hf.network).to(dtype), batch)
        logits, maxima = run_in_dtype(hf.network, dtype, batch)
        assert torch.allclose(logits[mask], whole_logits[mask], atol=1e-3, rtol=0), dtype
        assert maxima == pytest.approx(whole_maxima, rel=1e-3), dtype
        assert not torch.equal(logits[mask], forward_max_abs(hf.network, batch)[0][mask]), "it did run reduced"
    for name, (tensor, original) in tensors.items():
        now = hf.network.state_dict(keep_vars=True)[name]
        assert now is tensor and now.dtype == original.dtype and torch.equal(now, original), name
