"""tokenizer-match: tokens beyond the embedding, special ids against the config, a foreign tokenizer."""

from __future__ import annotations

import json
import shutil

import pytest

from interface_models import chat_model_dir, probe_prompts, run_rungs, rung, variant_harness

pytestmark = pytest.mark.slow


def copy_model(tmp_path):
    dest = tmp_path / "model"
    shutil.copytree(chat_model_dir("chatml"), dest, ignore=shutil.ignore_patterns("manifest.json"))
    return dest


def foreign_tokenizer_dir():
    """The factory's tokenizer trained on another corpus with another seed: same special tokens, other ids."""
    from ladder.fixtures import models

    return models.foreign_tokenizer_dir("chatml")


@pytest.mark.parametrize("used_by, status", [(None, "fail"), ("template", "fail"), ("harness", "fail"),
                                             ("class-default", "warn")])
def test_added_tokens_without_resized_embeddings(tmp_path, monkeypatch, used_by, status):
    """Tokens added to the tokenizer without `resize_token_embeddings`: their ids index beyond the embedding. A
    fail when the checkpoint's tokenizer files list them or the user's path uses one (the template writes it, the
    harness sends it); a warn for a token only the tokenizer class adds when it loads, which nothing on the path
    uses (a Qwen2 tokenizer class adds its default `<|endoftext|>` to a tokenizer saved without one)."""
    from transformers import AutoTokenizer

    model = copy_model(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.add_tokens(["<tool_call>", "</tool_call>"], special_tokens=True)
    if used_by == "template":
        tokenizer.chat_template = tokenizer.chat_template.replace("<|im_start|>assistant", "<tool_call>assistant")
    tokenizer.save_pretrained(model)
    if used_by == "class-default":  # the files as saved before the tokens were added: a load adds them
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy2(chat_model_dir("chatml") / name, tmp_path / name)
        from ladder.probes import tokenizer_match

        saved = tokenizer_match.saved_added_tokens(str(tmp_path))
        assert "<tool_call>" not in saved and "<|im_end|>" in saved
        monkeypatch.setattr(tokenizer_match, "saved_added_tokens", lambda folder: saved)
    transcript = tmp_path / "sent.jsonl"
    transcript.write_text(json.dumps({"prompt": "Call it.", "input": "<|im_start|>user\nCall <tool_call> it."
                                      "<|im_end|>\n<|im_start|>assistant\n", "output": "5"}) + "\n")
    report, _ = run_rungs(tmp_path / "run", ["tokenizer-match"], model=model,
                          **({"transcript": str(transcript)} if used_by == "harness" else {}))
    result = rung(report, "tokenizer-match")
    assert result.status.value == status, result.summary
    assert result.evidence["tokenizer_size"] > result.evidence["embedding_rows"]
    assert "<tool_call>" in result.summary and "index beyond" in result.summary
    assert bool(result.evidence["ids_beyond_embedding_on_your_path"]) == (used_by in ("template", "harness"))


@pytest.mark.parametrize("name, status", [("eos", "fail"), ("bos", "warn")])
def test_config_special_id_that_is_not_the_tokenizers(tmp_path, name, status):
    """An eos id the checkpoint's own config stops on that is neither the tokenizer's eos nor the end of turn:
    generation never stops, a fail. config.json's bos_token_id is not what reaches the model (the tokenizer
    writes its own BOS): a hazard, a warn."""
    model = copy_model(tmp_path)
    for file in ("config.json", "generation_config.json"):
        data = json.loads((model / file).read_text())
        data[f"{name}_token_id"] = 7
        (model / file).write_text(json.dumps(data))
    report, _ = run_rungs(tmp_path / "run", ["tokenizer-match"], model=model)
    result = rung(report, "tokenizer-match")
    assert result.status.value == status and f"{name} id" in result.summary, result.summary


def test_harness_with_a_tokenizer_of_another_model(tmp_path):
    model = chat_model_dir("chatml")
    harness = variant_harness(tmp_path, model, mode="template", tokenizer=foreign_tokenizer_dir())
    report, _ = run_rungs(tmp_path / "run", ["tokenizer-match"], model=model, harness=harness, prompts=probe_prompts(6))
    result = rung(report, "tokenizer-match")
    assert result.status.value == "fail", result.summary
    comparison = result.evidence["tokenizer_comparisons"][0]
    nats = comparison["nats_per_char"]
    assert nats["your harness's tokenizer"] > nats["the checkpoint's own"] * 1.1
    assert comparison["same_ids_on_probe_text"] is False


def test_healthy_pair_passes(tmp_path):
    model = chat_model_dir("chatml")
    harness = variant_harness(tmp_path, model, mode="template")
    report, _ = run_rungs(tmp_path / "run", ["tokenizer-match"], model=model, harness=harness, prompts=probe_prompts(2))
    result = rung(report, "tokenizer-match")
    assert result.status.value == "pass", result.summary


def test_without_a_model_it_skips(tmp_path):
    report, _ = run_rungs(tmp_path, ["tokenizer-match"])
    assert rung(report, "tokenizer-match").status.value == "skip"


def test_template_token_left_at_zero_looks_untrained(tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    model = copy_model(tmp_path)
    end_of_turn = AutoTokenizer.from_pretrained(model).convert_tokens_to_ids("<|im_end|>")
    weights = load_file(model / "model.safetensors")
    weights["model.embed_tokens.weight"][end_of_turn] = 0.0
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    report, _ = run_rungs(tmp_path / "run", ["tokenizer-match"], model=model)
    result = rung(report, "tokenizer-match")
    assert result.status.value == "fail" and "<|im_end|>" in result.summary, result.summary


def test_untrained_rows_are_initialisation_signatures_not_small_norms():
    """Rows at an initialisation (zero, copies, the mean `resize_token_embeddings` writes) are untrained;
    a trained added token with a small norm (marker tokens often have one) is not."""
    import torch
    from transformers import AutoModelForCausalLM

    from ladder.probes.tokenizer_match import untrained_rows

    model = AutoModelForCausalLM.from_pretrained(chat_model_dir("chatml"))
    rows = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(rows + 2)  # two new rows, initialised at the mean of the others
    weights = model.get_input_embeddings().weight.detach().clone()
    trained_small = rows - 1  # a trained row, scaled to a tenth of its norm: small, but trained
    weights[trained_small] = weights[7] * 0.1
    zeroed = 9
    weights[zeroed] = 0.0
    added = [trained_small, zeroed, rows, rows + 1]
    found = untrained_rows([("input", weights)], added)
    assert set(found) == {zeroed, rows, rows + 1}, found
    assert "mean" in " ".join(found[rows]) and "~0" in found[zeroed][0]
    # with the base: a row the base had trained and the fine-tune kept is not untrained
    base = weights.clone()
    assert untrained_rows([("input", weights)], [trained_small], {"input": base}) == {}
    assert torch.equal(base, weights)


def permuted_tokenizer_copy(source, share: float, seed: int = 0):
    """`source` with a tokenizer of "another build": the same size, special tokens and merges, but `share` of
    the ordinary tokens' ids handed to other tokens (the weights are the source's, linked)."""
    import os
    import random

    from derived_models import derived_model

    def build(dest):
        for path in source.iterdir():
            if path.name == "model.safetensors":
                os.symlink(path, dest / path.name)
            elif path.is_file() and path.name != "manifest.json":
                shutil.copy2(path, dest / path.name)
        data = json.loads((dest / "tokenizer.json").read_text())
        special = {token["id"] for token in data.get("added_tokens", [])}
        vocab = data["model"]["vocab"]
        ordinary = sorted(i for i in vocab.values() if i not in special)
        rng = random.Random(seed)
        chosen = rng.sample(ordinary, int(len(ordinary) * share))
        moved = dict(zip(chosen, rng.sample(chosen, len(chosen))))
        data["model"]["vocab"] = {token: moved.get(i, i) for token, i in vocab.items()}
        (dest / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")

    return derived_model("permuted-tokenizer", [source], {"share": share, "seed": seed}, build)


@pytest.fixture(scope="module")
def smollm2():
    from ladder.fixtures.real import smollm2_dir

    return smollm2_dir()


@pytest.mark.parametrize("share", [0.5, 1.0])
def test_a_tokenizer_of_another_build_is_named_with_no_other_to_compare(tmp_path, smollm2, share):
    """The real model with a tokenizer whose ordinary ids are handed around (same size, same special ids), no
    base and no harness: the embedding's geometry names it. A warning, not a culprit: a model trained from
    scratch with a big vocabulary sits at chance too (5% on this tokenizer, measured)."""
    model = permuted_tokenizer_copy(smollm2, share)
    report, _ = run_rungs(tmp_path, ["tokenizer-match"], model=model)
    result = rung(report, "tokenizer-match")
    assert result.status.value == "warn" and "may not be this model's" in result.summary, result.summary
    geometry = result.evidence["spelling_variants"]
    assert geometry["above_chance"] < 0.5 and geometry["template_accuracy"] == 0, geometry


def test_the_real_models_own_tokenizer_passes_on_its_geometry(tmp_path, smollm2):
    report, _ = run_rungs(tmp_path, ["tokenizer-match"], model=smollm2)
    result = rung(report, "tokenizer-match")
    assert result.status.value != "fail" and "may not be this model's" not in result.summary, result.summary
    assert result.evidence["spelling_variants"]["above_chance"] >= 0.7, result.evidence["spelling_variants"]
