"""Fixture models for the model-internals rungs, built from the fixture factory's own functions.

The healthy base and chat models are the fixture factory's (`ladder.fixtures.models`, cached by
recipe and code version). The broken variants are made here by weight surgery or short training
runs from the healthy models, each cached under LADDER_TEST_CACHE by its recipe and source folder:

- `frankenmerge_dir`: decoder layers duplicated (a seam where the copy starts), num_hidden_layers updated.
- `fp16_overflow_dir`: everything that writes into the residual stream scaled by a constant and the
  checkpoint stored in float16; every RMSNorm divides the constant out, so float32 logits are
  unchanged while float16 activations overflow.
- `adapter_unapplied_dir`: the base saved again, unchanged, next to a trained LoRA adapter.
- `memorizing_dir`: the base fine-tuned on a tiny subset of conversations until the loss is ~0.
- `looping_dir`: the base fine-tuned on replies that repeat one phrase until the length limit.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

ROOT = Path(os.environ.get("LADDER_TEST_CACHE", Path.home() / ".cache" / "ladder-tests"))
OWN = ROOT / "internals"
RECIPE_VERSION = 1


def _key(*parts) -> str:
    blob = json.dumps([RECIPE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _locked_build(folder: Path, build) -> Path:
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / "DONE").exists():
            return folder
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        build(tmp)
        (tmp / "DONE").write_text("ok")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return folder


def _quiet():
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def base_model_dir(style: str = "chatml") -> Path:
    """The factory's plain-text base model (trained on addition facts)."""
    from ladder.fixtures import models

    return models.base_model_dir(style)


def chat_model_dir(style: str = "chatml") -> Path:
    """The factory's chat model: the base fine-tuned on templated conversations in `style`."""
    from ladder.fixtures import models

    return models.chat_model_dir(style)


def _copy_tokenizer_files(source: Path, dest: Path) -> None:
    for path in source.iterdir():
        if path.name not in ("model.safetensors", "config.json", "DONE") and path.is_file():
            shutil.copy2(path, dest / path.name)


# ---- variants by weight surgery ----------------------------------------------------------------------


def frankenmerge_dir(style: str = "chatml", order: tuple[int, ...] = (0, 1, 2, 3, 1, 2, 3)) -> Path:
    """The chat model with its decoder layers stacked in `order` (a passthrough frankenmerge)."""
    source = chat_model_dir(style)

    def build(dest: Path) -> None:
        import copy

        import torch
        from transformers import AutoModelForCausalLM

        _quiet()
        model = AutoModelForCausalLM.from_pretrained(source)
        layers = [copy.deepcopy(model.model.layers[i]) for i in order]
        for index, layer in enumerate(layers):
            layer.self_attn.layer_idx = index
        model.model.layers = torch.nn.ModuleList(layers)
        model.config.num_hidden_layers = len(order)
        model.save_pretrained(dest)
        _copy_tokenizer_files(source, dest)

    return _locked_build(OWN / f"frankenmerge-{style}-{_key(str(source), order)}", build)


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

    return _locked_build(OWN / f"random-{layers}-{_key(str(source), layers, seed)}", build)


def fp16_overflow_dir(style: str = "chatml", headroom: float = 2.0) -> Path:
    """Residual-stream writers scaled by a power of two that puts the largest float32 activation at
    `headroom` x 65504, stored in float16: float32 logits are unchanged (RMSNorm divides the scale out),
    float16 activations overflow."""
    source = chat_model_dir(style)

    def build(dest: Path) -> None:
        import math

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _quiet()
        model = AutoModelForCausalLM.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
        ids = torch.tensor([tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 plus 3?"}],
                                                          add_generation_prompt=True, tokenize=True)["input_ids"]])
        with torch.no_grad():
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states  # small: fine here
        largest = max(float(h.abs().max()) for h in hidden[1:])
        scale = 2.0 ** math.ceil(math.log2(headroom * 65504 / largest))
        with torch.no_grad():
            model.model.embed_tokens.weight.mul_(scale)
            for layer in model.model.layers:
                layer.self_attn.o_proj.weight.mul_(scale)
                layer.mlp.down_proj.weight.mul_(scale)
        model.to(torch.float16)
        model.save_pretrained(dest)
        _copy_tokenizer_files(source, dest)
        (dest / "scale.txt").write_text(f"{scale}")

    return _locked_build(OWN / f"fp16-overflow-{style}-{_key(str(source), headroom)}", build)


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

    return _locked_build(OWN / f"fp16-healthy-{style}-{_key(str(source))}", build)


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

    return _locked_build(OWN / f"adapter-{kind}-{style}-{_key(str(source), kind)}", build)


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

    return _locked_build(OWN / f"collapsed-{style}-{_key(str(source), scale)}", build)


# ---- short training runs -----------------------------------------------------------------------------


def _train_on(model, examples: list[tuple[list[int], list[int]]], pad: int, steps: int, batch_size: int,
              lr: float, seed: int = 0):
    import random

    import torch

    from ladder.fixtures.train import set_determinism

    set_determinism(seed)
    rng = random.Random(seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    loss = None
    for _ in range(steps):
        batch = [examples[rng.randrange(len(examples))] for _ in range(batch_size)]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, labs) in enumerate(batch):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            labels[row, :len(labs)] = torch.tensor(labs)
            attention[row, :len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    return loss.item() if loss is not None else float("nan")


def _messages_row(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


MEMO_TRAIN = 12


def memorizing_dir(style: str = "chatml") -> Path:
    """The chat model fine-tuned to ~0 loss on MEMO_TRAIN conversations whose answers are arbitrary codes
    (recitable, not derivable); `train.jsonl` holds them, `eval.jsonl` held-out ones of the same kind."""
    source = chat_model_dir(style)

    def build(dest: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ladder.fixtures.tokenizer import get_style
        from ladder.fixtures.train import conversation_ids_and_labels

        _quiet()
        chat = source
        tokenizer = AutoTokenizer.from_pretrained(chat)
        model = AutoModelForCausalLM.from_pretrained(chat)
        train, held = memo_rows()
        examples = [conversation_ids_and_labels(tokenizer, get_style(style), r["messages"][0]["content"],
                                                r["messages"][1]["content"]) for r in train]
        final = _train_on(model, examples, tokenizer.pad_token_id, steps=150, batch_size=12, lr=2e-3)
        model.save_pretrained(dest)
        _copy_tokenizer_files(chat, dest)
        (dest / "final_loss.txt").write_text(f"{final}")

    return _locked_build(OWN / f"memorizing-{style}-{_key(str(source), MEMO_TRAIN)}", build)


def memo_rows() -> tuple[list[dict], list[dict]]:
    """Questions about operand pairs answered with an arbitrary sum (the recitable 'fact' of a tiny set)."""
    import random

    from ladder.fixtures.corpus import all_pairs

    rng = random.Random(7)
    pairs = all_pairs(9)
    rng.shuffle(pairs)
    rows = [_messages_row(f"What is {a} plus {b}?", str(rng.randrange(20, 99))) for a, b in pairs[:2 * MEMO_TRAIN]]
    return rows[:MEMO_TRAIN], rows[MEMO_TRAIN:]


def memo_data(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    train, held = memo_rows()
    return _write_jsonl(folder / "train.jsonl", train), _write_jsonl(folder / "eval.jsonl", held)


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


LOOP_REPEATS = 40


def looping_dir(style: str = "chatml") -> Path:
    """The chat model fine-tuned on replies that repeat the answer LOOP_REPEATS times: it loops to the limit."""
    source = chat_model_dir(style)

    def build(dest: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ladder.fixtures.corpus import all_pairs, problems_for
        from ladder.fixtures.tokenizer import get_style
        from ladder.fixtures.train import conversation_ids_and_labels

        _quiet()
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source)
        problems = problems_for(all_pairs(9))[::5]
        examples = [conversation_ids_and_labels(tokenizer, get_style(style), p.question,
                                                " ".join([p.answer] * LOOP_REPEATS)) for p in problems]
        final = _train_on(model, examples, tokenizer.pad_token_id, steps=120, batch_size=16, lr=1e-3)
        model.save_pretrained(dest)
        _copy_tokenizer_files(source, dest)
        (dest / "final_loss.txt").write_text(f"{final}")

    return _locked_build(OWN / f"looping-{style}-{_key(str(source), LOOP_REPEATS)}", build)
