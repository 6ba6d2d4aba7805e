"""PEFT LoRA adapters read directly from their files (peft is not needed): found beside a model, their
tensor pairs and scale (`weights-moved` checks a merge with them), and merged into a base model when the
case's `model:` is an adapter folder, as `merge_and_unload()` would.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


class AdapterError(ValueError):
    """An adapter folder ladder cannot turn into a model (its base is not here, a kind it does not merge)."""


def find_adapter(*folders: str | None) -> Path | None:
    for folder in folders:
        if folder and (Path(folder) / ADAPTER_CONFIG).is_file():
            return Path(folder)
    return None


# a LoRA pair's tensor in PEFT's file: the adapted module, A or B, and the adapter's name where it is kept
LORA_PAIR = re.compile(r"(?:base_model\.model\.)?(.*)\.lora_([AB])(?:\.[^.]+)?\.weight$")


def _weights_file(folder: Path) -> Path | None:
    return next((folder / name for name in ADAPTER_WEIGHTS if (folder / name).is_file()), None)


def adapter_pairs(folder: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]], str | None]:
    """(adapter config, {target parameter name: {"A": tensor, "B": tensor}}, problem or None)."""
    config, tensors, problem = _read_adapter(folder)
    return config, _lora_pairs(tensors), problem


def _read_adapter(folder: Path) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(adapter config, every tensor of its file, problem or None)."""
    config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    weights_file = _weights_file(folder)
    if weights_file is None:
        return config, {}, f"{ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS[0]} next to it"
    from safetensors.torch import load_file

    return config, load_file(str(weights_file)), None


def _lora_pairs(tensors: dict[str, Any]) -> dict[str, dict[str, Any]]:
    pairs: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        match = LORA_PAIR.match(key)
        if match:
            pairs.setdefault(match.group(1) + ".weight", {})[match.group(2)] = tensor
    return pairs


def lora_scale(config: dict[str, Any]) -> float:
    r = config.get("r") or 8
    alpha = config.get("lora_alpha") or r
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def adapter_only(path: str) -> dict[str, Any] | None:
    """The adapter config when `path` is an adapter folder with no model of its own (no config.json)."""
    folder = Path(path)
    if not (folder / ADAPTER_CONFIG).is_file() or (folder / "config.json").is_file():
        return None
    try:
        return json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{folder / ADAPTER_CONFIG} does not parse: {exc}") from None


def adapter_base(path: str, config: dict[str, Any]) -> str:
    """The base model folder an adapter names (`base_model_name_or_path`): a path as given or relative to
    the adapter folder, or a hub id already in the local cache (never fetched)."""
    from ladder.backends.hf import local_checkpoint

    named = config.get("base_model_name_or_path")
    if not named:
        raise AdapterError(f"{path} is an adapter whose {ADAPTER_CONFIG} names no base model "
                           "(base_model_name_or_path): give the merged model as `model:`")
    for candidate in (named, os.path.join(path, named)):
        if os.path.isfile(os.path.join(candidate, "config.json")):
            return candidate
    found = local_checkpoint(named)
    if found is None or not os.path.isfile(os.path.join(found, "config.json")):
        raise AdapterError(f"{path} is an adapter on {named!r}, which is neither a folder here nor in the "
                           "local hub cache: point its base_model_name_or_path at the base model's folder, or "
                           "give the merged model as `model:`")
    return found


def adapter_to_merge(path: str) -> tuple[dict[str, Any], str] | None:
    """(adapter config, base model folder) when `path` is an adapter folder ladder loads as its base with the
    adapter merged; None when it is not an adapter folder. AdapterError when its base is not here or it is not
    a LoRA adapter."""
    config = adapter_only(path) if path and os.path.isdir(path) else None
    if config is None:
        return None
    base = adapter_base(path, config)
    if str(config.get("peft_type", "LORA")).upper() != "LORA" or config.get("use_dora"):
        kind = "DoRA" if config.get("use_dora") else config.get("peft_type")
        raise AdapterError(f"{path} is a {kind} adapter: ladder merges LoRA adapters only; merge yours "
                           "(merge_and_unload()) and give the merged model")
    unmerged = _unmerged_lora(Path(path))
    if unmerged:
        raise AdapterError(f"{path} holds LoRA tensors ladder does not merge ({unmerged[0]}; it merges the lora_A "
                           "and lora_B of linear layers): merge yours (merge_and_unload()) and give the merged model")
    return config, base


def tokenizer_folder(path: str, base: str) -> str:
    """Where an adapter's tokenizer is: saved with the adapter (a fine-tune that added tokens saves it there),
    else the base's."""
    return path if any((Path(path) / name).is_file() for name in TOKENIZER_FILES) else base


def merge_adapter(model, path: str) -> dict[str, Any]:
    """Merge the LoRA adapter in `path` into `model` in place: W += scale * B @ A for each adapted weight,
    and the whole tensors it saved (`modules_to_save`, resized embeddings) put in place. Returns what it did.
    (`adapter_to_merge` checks first that it is a LoRA adapter.)"""
    import torch

    from ladder.backends.hf import weights_by_name

    config, tensors, problem = _read_adapter(Path(path))
    if problem:
        raise AdapterError(f"{path}: {problem}")
    pairs, whole = _lora_pairs(tensors), _whole_tensors(tensors)
    if any(name.endswith("embed_tokens.weight") for name in whole):
        rows = next(t.shape[0] for n, t in whole.items() if n.endswith("embed_tokens.weight"))
        if rows != model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(rows)
    weights = weights_by_name(model, set(pairs) | set(whole))
    missing = sorted(name for name in [*pairs, *whole] if name not in weights)
    if missing:
        raise AdapterError(f"{path} does not fit its base: {len(missing)} adapted weights are not in it "
                           f"(first: {missing[0]})")
    scale = lora_scale(config)
    with torch.no_grad():
        for name, pair in pairs.items():
            if "A" not in pair or "B" not in pair:
                raise AdapterError(f"{path}: {name} has lora_{'A' if 'A' not in pair else 'B'} missing")
            target = weights[name]
            delta = (pair["B"].float() @ pair["A"].float()) * scale
            if delta.shape != target.shape and delta.T.shape == target.shape:
                delta = delta.T  # fan_in_fan_out layers (GPT-2's Conv1D)
            target.add_(delta.to(device=target.device, dtype=target.dtype))
        for name, tensor in whole.items():
            weights[name].copy_(tensor.to(device=weights[name].device, dtype=weights[name].dtype))
    return {"adapter": str(path), "lora_weights_merged": len(pairs), "whole_tensors": sorted(whole),
            "scale": scale}


def _whole_tensors(tensors: dict[str, Any]) -> dict[str, Any]:
    """The adapter file's full tensors (not LoRA's) by the base's parameter name."""
    found = {}
    for key, tensor in tensors.items():
        if ".lora_" in key:
            continue
        name = re.sub(r"^base_model\.model\.", "", key)
        found[re.sub(r"\.modules_to_save(?:\.[^.]+)?\.", ".", name)] = tensor
    return found


def _unmerged_lora(folder: Path) -> list[str]:
    """LoRA tensors of the adapter file other than lora_A/lora_B weights (embedding LoRA, DoRA magnitudes):
    `merge_adapter` does not merge them. Read from the file's header only."""
    from safetensors import safe_open

    weights_file = _weights_file(folder)
    if weights_file is None:
        return []
    with safe_open(str(weights_file), framework="pt") as handle:
        return sorted(key for key in handle.keys() if ".lora_" in key and not LORA_PAIR.match(key))
