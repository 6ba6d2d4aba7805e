"""Fixture models for the model-internals rungs, built from the fixture factory's own functions.

The healthy base and chat models are the fixture factory's (`ladder.fixtures.models`, cached by
recipe and code version). The variants made here by weight surgery are cached by `derived_models.derived_model`:

- `frankenmerge_dir`: decoder layers repeated (a seam where the copy starts), num_hidden_layers updated.
- `fp16_overflow_dir`: the residual stream scaled up and the checkpoint stored in float16; every
  RMSNorm divides the factor out, so float32 logits are unchanged while float16 activations overflow.
- `adapter_dir`: the chat model next to a LoRA adapter (unapplied, zero or merged).
- `memorizing_dir` and `looping_dir`: the factory's further fine-tunes of the chat model.
"""

from __future__ import annotations

import json
from pathlib import Path

from derived_models import copy_tokenizer_files as _copy_tokenizer_files
from derived_models import derived_model
from derived_models import quiet as _quiet


def base_model_dir(style: str = "chatml") -> Path:
    """The factory's plain-text base model (trained on addition facts)."""
    from ladder.fixtures import models

    return models.base_model_dir(style)


def chat_model_dir(style: str = "chatml") -> Path:
    """The factory's chat model: the base fine-tuned on templated conversations in `style`."""
    from ladder.fixtures import models

    return models.chat_model_dir(style)


# ---- variants by weight surgery ----------------------------------------------------------------------


def frankenmerge_dir(style: str = "chatml", order: tuple[int, ...] = (0, 1, 2, 3, 1, 2, 3)) -> Path:
    """The chat model with its decoder layers stacked in `order` (a passthrough frankenmerge)."""
    source = chat_model_dir(style)

    def build(dest: Path) -> None:
        from ladder.fixtures import models, surgery

        _quiet()
        _, model = models.load(source)
        surgery.stack_layers(model, order).save_pretrained(dest)
        _copy_tokenizer_files(source, dest)

    return derived_model("frankenmerge", [source], {"order": order}, build)


def deep_model_dir(layers: int = 8, seed: int = 0) -> Path:
    """A random-init Llama of the factory's width with `layers` layers and the chat tokenizer."""
    source = chat_model_dir("chatml")

    def build(dest: Path) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        _quiet()
        torch.manual_seed(seed)
        config = AutoConfig.from_pretrained(source)
        config.num_hidden_layers = layers
        model = AutoModelForCausalLM.from_config(config)
        model.save_pretrained(dest)
        _copy_tokenizer_files(source, dest)

    return derived_model("random", [source], {"layers": layers, "seed": seed}, build)


def fp16_overflow_dir(style: str = "chatml", headroom: float = 2.0) -> Path:
    """The residual stream scaled up (`surgery.scale_residual_stream`) and the checkpoint stored in float16:
    float32 logits are unchanged (RMSNorm divides the factor out), float16 activations overflow."""
    source = chat_model_dir(style)

    def build(dest: Path) -> None:
        import torch

        from ladder.fixtures import models, surgery

        _quiet()
        tokenizer, model = models.load(source)
        surgery.scale_residual_stream(model, tokenizer, headroom)
        model.to(torch.float16).save_pretrained(dest)
        _copy_tokenizer_files(source, dest)

    return derived_model("fp16-overflow", [source], {"headroom": headroom}, build)


def fp16_healthy_dir(style: str = "chatml") -> Path:
    """The healthy chat model stored in float16 (the control for fp16 overflow)."""
    source = chat_model_dir(style)

    def build(dest: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        _quiet()
        model = AutoModelForCausalLM.from_pretrained(source)
        model.to(torch.float16)
        model.save_pretrained(dest)
        _copy_tokenizer_files(source, dest)

    return derived_model("fp16-healthy", [source], {}, build)


# ---- running one rung as the CLI does ----------------------------------------------------------------


def run_rung(rung_id: str, tmp_path: Path, params: dict | None = None, **case_keys):
    """The RungResult of a one-rung ladder (the default ladder's rung, `params` overriding) on a case."""
    import yaml

    from ladder.case import Case
    from ladder.loader import load_ladder
    from ladder.runner import Runner

    ladder_file = tmp_path / f"{rung_id}-ladder.yaml"
    rung = {"id": rung_id, "title": f"{rung_id} under test", "tier": TIERS[rung_id], "probe": rung_id,
            "params": params or {}, "why": "test", "fix": "test"}
    ladder_file.write_text(yaml.safe_dump({"name": "one-rung", "rungs": [rung]}), encoding="utf-8")
    case = Case(**{k: str(v) if isinstance(v, Path) else v for k, v in case_keys.items()})
    report = Runner(load_ladder(ladder_file), case, keep_going=True).run()
    return report.rungs[0]


TIERS = {"numerics": "numerics", "weights-moved": "weights", "memorization": "behaviour",
         "degeneration": "behaviour", "seam-damage": "architecture", "attention-collapse": "architecture"}


# ---- adapters ----------------------------------------------------------------------------------------

ADAPTER_TARGETS = ("q_proj", "v_proj")


def _write_adapter(dest: Path, model, base_path: Path, *, zero: bool, seed: int = 0, rank: int = 4,
                   alpha: int = 8) -> dict:
    """adapter_config.json + adapter_model.safetensors for q/v of every layer; returns {param: B@A*scale}."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors, deltas = {}, {}
    for index, layer in enumerate(model.model.layers):
        for target in ADAPTER_TARGETS:
            weight = getattr(layer.self_attn, target).weight
            a = torch.randn(rank, weight.shape[1], generator=generator) * 0.1
            b = (torch.zeros(weight.shape[0], rank) if zero
                 else torch.randn(weight.shape[0], rank, generator=generator) * 0.1)
            key = f"base_model.model.model.layers.{index}.self_attn.{target}"
            tensors[f"{key}.lora_A.weight"] = a.contiguous()
            tensors[f"{key}.lora_B.weight"] = b.contiguous()
            deltas[f"model.layers.{index}.self_attn.{target}.weight"] = (b @ a) * (alpha / rank)
    save_file(tensors, str(dest / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": alpha,
              "target_modules": list(ADAPTER_TARGETS), "lora_dropout": 0.0, "bias": "none",
              "base_model_name_or_path": str(base_path), "fan_in_fan_out": False, "use_rslora": False}
    (dest / "adapter_config.json").write_text(json.dumps(config, indent=1))
    return deltas


def adapter_dir(kind: str = "unapplied", style: str = "chatml") -> Path:
    """The chat model plus a LoRA adapter saved next to it: `unapplied` (trained adapter, weights left
    as the base's), `zero` (lora_B all zero), `merged` (the adapter's B·A added to the weights)."""
    source = chat_model_dir(style)

    def build(dest: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        _quiet()
        model = AutoModelForCausalLM.from_pretrained(source)
        deltas = _write_adapter(dest, model, source, zero=kind == "zero")
        if kind == "merged":
            params = dict(model.named_parameters())
            with torch.no_grad():
                for name, delta in deltas.items():
                    params[name].add_(delta)
        model.save_pretrained(dest)
        _copy_tokenizer_files(source, dest)

    return derived_model("adapter", [source], {"kind": kind}, build)


def collapsed_attention_dir(style: str = "chatml", scale: float = 30.0) -> Path:
    """The chat model with queries and keys scaled by `scale`: attention logits x scale², one-hot heads."""
    source = chat_model_dir(style)

    def build(dest: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        _quiet()
        model = AutoModelForCausalLM.from_pretrained(source)
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_proj.weight.mul_(scale)
                layer.self_attn.k_proj.weight.mul_(scale)
        model.save_pretrained(dest)
        _copy_tokenizer_files(source, dest)

    return derived_model("collapsed", [source], {"scale": scale}, build)


# ---- fine-tuned variants (built by the fixture factory) --------------------------------------------


def _messages_row(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def memorizing_dir(style: str = "chatml") -> Path:
    """The factory's chat model tuned to ~0 loss on a dozen mislabelled questions (see `memo_data`)."""
    from ladder.fixtures import models

    return models.memorizing_model_dir(style)


def memo_data(folder: Path) -> tuple[Path, Path]:
    """train.jsonl: the questions the memorizing model was tuned on; eval.jsonl: held-out ones of that kind."""
    from ladder.fixtures import models

    folder.mkdir(parents=True, exist_ok=True)
    train, held = models.memorized_rows()
    return (_write_jsonl(folder / "train.jsonl", [_messages_row(q, a) for q, a in train]),
            _write_jsonl(folder / "eval.jsonl", [_messages_row(q, a) for q, a in held]))


def addition_data(folder: Path, n: int = 32) -> tuple[Path, Path]:
    """Conversations the chat model was tuned on (train.jsonl) and held-out ones (eval.jsonl)."""
    from ladder.fixtures.corpus import held_out_problems, problems_for, split_pairs
    from ladder.fixtures.train import ChatRecipe

    recipe = ChatRecipe()
    train_pairs, _ = split_pairs(9, recipe.held_out_fraction, recipe.seed)
    train = problems_for(train_pairs)[::7][:n]
    held = held_out_problems(9, recipe.held_out_fraction, recipe.seed, n=n, sample_seed=3)
    folder.mkdir(parents=True, exist_ok=True)
    return (_write_jsonl(folder / "train.jsonl", [_messages_row(p.question, p.answer) for p in train]),
            _write_jsonl(folder / "eval.jsonl", [_messages_row(p.question, p.answer) for p in held]))


def looping_dir(style: str = "chatml") -> Path:
    """The factory's chat model tuned on replies that repeat the answer: it loops to the length limit."""
    from ladder.fixtures import models

    return models.looping_model_dir(style)
