"""A LoRA adapter folder (PEFT's adapter_config.json and adapter_model.safetensors, no model of its own) given
as the case's model: ladder loads its base with the adapter merged, as `merge_and_unload()` would, and checks
that the user's harness applies it; an adapter whose base is not here, or that is not LoRA, is bad input."""

from __future__ import annotations

import json

import pytest

from interface_models import chat_model_dir, probe_prompts, run_rungs, rung

pytestmark = pytest.mark.slow

TARGETS = ("q_proj", "v_proj")
RANK, ALPHA = 4, 8


def write_adapter(folder, base: str, *, layers: int, hidden: int, seed: int = 0, lm_head=None, **config):
    """A PEFT-format LoRA adapter on `TARGETS` of every layer, lora_B non-zero (a trained adapter)."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "base_model_name_or_path": base, "r": RANK, "lora_alpha": ALPHA,
         "target_modules": list(TARGETS), "task_type": "CAUSAL_LM", **config}))
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(layers):
        for target in TARGETS:
            key = f"base_model.model.model.layers.{layer}.self_attn.{target}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(RANK, hidden, generator=generator) * 0.3
            tensors[f"{key}.lora_B.weight"] = torch.randn(hidden, RANK, generator=generator) * 0.3
    if lm_head is not None:
        tensors["base_model.model.lm_head.modules_to_save.weight"] = lm_head
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return tensors


def shape_of(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    return config["num_hidden_layers"], config["hidden_size"]


def test_an_adapter_folder_loads_as_its_base_with_the_adapter_merged(tmp_path):
    import torch

    from ladder.backends.hf import HFModel

    base_dir = chat_model_dir("chatml")
    layers, hidden = shape_of(base_dir)
    base = HFModel.load(str(base_dir))
    head = torch.randn_like(base.network.lm_head.weight)
    tensors = write_adapter(tmp_path / "lora", str(base_dir), layers=layers, hidden=hidden, lm_head=head)
    merged = HFModel.load(str(tmp_path / "lora"))

    before, after = dict(base.network.named_parameters()), dict(merged.network.named_parameters())
    scale = ALPHA / RANK
    for layer in range(layers):
        for target in TARGETS:
            key = f"model.layers.{layer}.self_attn.{target}"
            lora = f"base_model.model.{key}"
            expected = before[f"{key}.weight"] + scale * tensors[f"{lora}.lora_B.weight"] @ tensors[f"{lora}.lora_A.weight"]
            assert torch.allclose(after[f"{key}.weight"], expected, atol=1e-5)
    assert torch.equal(after["lm_head.weight"], head), "a module the adapter saved whole replaces the base's"
    untouched = [n for n in before if "q_proj" not in n and "v_proj" not in n and n != "lm_head.weight"]
    assert untouched and all(torch.equal(before[n], after[n]) for n in untouched)
    assert merged.tokenizer.get_vocab() == base.tokenizer.get_vocab(), "no tokenizer saved: the base's"
    assert merged.loading_info["adapter_merged"]["lora_weights_merged"] == layers * len(TARGETS)


def test_an_adapter_names_its_base_relative_to_itself(tmp_path):
    import shutil

    from ladder.backends.hf import HFModel

    base_dir = tmp_path / "models" / "base"
    shutil.copytree(chat_model_dir("chatml"), base_dir)
    layers, hidden = shape_of(base_dir)
    write_adapter(tmp_path / "models" / "lora", "../base", layers=layers, hidden=hidden)
    loaded = HFModel.load(str(tmp_path / "models" / "lora"))
    assert loaded.loading_info["base_model"].endswith("base")


@pytest.mark.parametrize("change, message", [
    ({"base_model_name_or_path": "some-org/a-model-not-here"}, "neither a folder here nor in the local hub cache"),
    ({"use_dora": True}, "DoRA adapter"),
    ({"peft_type": "IA3"}, "IA3 adapter"),
    ("embedding LoRA", "holds LoRA tensors ladder does not merge"),
])
def test_an_adapter_ladder_cannot_load_is_bad_input(tmp_path, change, message):
    from ladder.case import load_case
    from ladder.errors import InputError

    base_dir = chat_model_dir("chatml")
    layers, hidden = shape_of(base_dir)
    write_adapter(tmp_path / "lora", str(base_dir), layers=layers, hidden=hidden)
    if change == "embedding LoRA":
        import torch
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(tmp_path / "lora" / "adapter_model.safetensors"))
        tensors["base_model.model.model.embed_tokens.lora_embedding_A"] = torch.ones(RANK, 8)
        save_file(tensors, str(tmp_path / "lora" / "adapter_model.safetensors"))
    else:
        config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
        (tmp_path / "lora" / "adapter_config.json").write_text(json.dumps({**config, **change}))
    case = tmp_path / "case.yaml"
    case.write_text("model: lora\n")
    with pytest.raises(InputError, match=message):
        load_case(case)


HARNESS = '''
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from safetensors.torch import load_file

BASE = {base!r}
tokenizer = AutoTokenizer.from_pretrained(BASE)
model = AutoModelForCausalLM.from_pretrained(BASE).eval()


class LoRA(torch.nn.Module):
    """The adapter applied by hand, as a training codebase without peft does."""

    def __init__(self, layer, a, b, scale):
        super().__init__()
        self.base_layer, self.scale = layer, scale
        self.lora_A = torch.nn.Linear(a.shape[1], a.shape[0], bias=False)
        self.lora_B = torch.nn.Linear(b.shape[1], b.shape[0], bias=False)
        self.lora_A.weight.data, self.lora_B.weight.data = a, b

    def forward(self, x):
        return self.base_layer(x) + self.scale * self.lora_B(self.lora_A(x))


if {apply!r}:
    tensors = load_file({adapter!r} + "/adapter_model.safetensors")
    for name, module in list(model.named_modules()):
        for target in ("q_proj", "v_proj"):
            key = "base_model.model." + name + "." + target
            if key + ".lora_A.weight" in tensors:
                setattr(module, target, LoRA(getattr(module, target), tensors[key + ".lora_A.weight"],
                                             tensors[key + ".lora_B.weight"], {scale}))


def ask(prompt):
    ids = tokenizer.apply_chat_template([{{"role": "user", "content": prompt}}], add_generation_prompt=True,
                                        return_dict=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
'''


@pytest.mark.parametrize("apply, status", [(False, "fail"), (True, "pass")])
def test_load_report_on_an_adapter_folder_checks_the_harness_applies_it(tmp_path, apply, status):
    """The harness loads the adapter's base, as it must: only whether it applies the adapter is at stake."""
    base_dir = chat_model_dir("chatml")
    layers, hidden = shape_of(base_dir)
    adapter = tmp_path / "lora"
    write_adapter(adapter, str(base_dir), layers=layers, hidden=hidden)
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS.format(base=str(base_dir), adapter=str(adapter), apply=apply, scale=ALPHA / RANK))
    report, _ = run_rungs(tmp_path / "run", ["load-report"], model=adapter, harness=f"{harness}:ask",
                          prompts=probe_prompts(2))
    result = rung(report, "load-report")
    assert result.status.value == status, result.summary
    assert "weight files differ" not in result.summary, "the adapter's base is the model the harness must load"
    assert result.evidence["adapter_merged_by_ladder"]["base_model"] == str(base_dir)
    if status == "fail":
        assert "no adapter applied" in result.summary


@pytest.mark.parametrize("trained, status", [(True, "pass"), (False, "fail")])
def test_weights_moved_on_an_adapter_folder_without_a_base(tmp_path, trained, status):
    """ladder merged the adapter itself, so only whether it was ever trained is in question (lora_B all zero:
    saved before the first step)."""
    import torch
    from safetensors.torch import load_file, save_file

    base_dir = chat_model_dir("chatml")
    layers, hidden = shape_of(base_dir)
    adapter = tmp_path / "lora"
    write_adapter(adapter, str(base_dir), layers=layers, hidden=hidden)
    if not trained:
        tensors = load_file(str(adapter / "adapter_model.safetensors"))
        save_file({k: torch.zeros_like(v) if ".lora_B." in k else v for k, v in tensors.items()},
                  str(adapter / "adapter_model.safetensors"))
    report, _ = run_rungs(tmp_path / "run", ["weights-moved"], model=adapter)
    result = rung(report, "weights-moved")
    assert result.status.value == status, result.summary
