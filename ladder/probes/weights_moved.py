"""Rung `weights-moved`: the layers meant to train did not move from the base, or an adapter was
never applied or merged.

What it checks:
    With `--base`, the relative change ||W_tuned - W_base|| / ||W_base|| of every parameter, as a
    series per decoder layer and per group (attention, MLP, norms) plus the embedding, output head
    and final norm. Layers the adapter config (`target_modules`, `layers_to_transform`) or the
    training config (keys naming frozen or trainable layers and modules) says were trained but did
    not move, and layers said to be frozen that moved. An adapter saved next to the model
    (`adapter_config.json` and its safetensors, read directly; peft is not needed): whether its
    weights are zero (never trained), and whether the model ladder loads equals base + adapter
    (merged), equals the base (not applied: the logits on the probe prompts are identical to the
    base's too), or neither.

Why it matters:
    A fine-tune that never changed the weights behaves exactly like its base, and every other
    hypothesis about the fine-tune is then moot: the freeze pattern matched everything, the
    optimizer got no parameters, the adapter was saved but never loaded or merged, or the
    wrong checkpoint was exported.

Symptom:
    The fine-tuned model answers exactly like the base model; training loss went down but the
    exported model shows none of it; an adapter folder whose weights change nothing.

Fix:
    Load the adapter (`PeftModel.from_pretrained(base, adapter_dir)`) or merge it
    (`merge_and_unload()`) and save the merged model; check which parameters had
    `requires_grad=True` and reached the optimizer; export the checkpoint the trainer wrote
    after training, not the initial one.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ladder.adapters import ADAPTER_CONFIG, adapter_pairs, find_adapter, lora_scale
from ladder.probes.base import Probe, ProbeContext, failed, passed, skip, step_progress, warned

LAYER_INDEX = re.compile(r"\.(\d+)\.")
FROZEN_WORDS = ("freeze", "frozen")
TRAINED_WORDS = ("trainable", "unfreeze", "unfrozen", "layers_to_train", "train_layers", "layers_to_transform")


class WeightsMovedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unmoved_below: float = Field(default=1e-6, ge=0,
                                 description="Relative change under which a parameter did not move.")
    merge_tolerance: float = Field(default=0.05, ge=0,
                                   description="Error of W - W_base relative to B·A under which it is merged.")
    logits_tolerance: float = Field(default=1e-5, ge=0,
                                    description="Logit difference under which tuned and base are identical.")
    max_prompts: int = Field(default=8, ge=1, description="Probe prompts for the logits comparison.")


def group_of(name: str) -> str:
    lowered = name.lower()
    if "norm" in lowered or ".ln" in lowered:
        return "norm"
    if "attn" in lowered or "attention" in lowered or re.search(r"\.(q|k|v|o)_proj", lowered):
        return "attention"
    if "mlp" in lowered or "ffn" in lowered or "feed_forward" in lowered or "experts" in lowered:
        return "mlp"
    return "other"


def layer_of(name: str, layer_prefix: str) -> int | None:
    if not name.startswith(layer_prefix + "."):
        return None
    match = LAYER_INDEX.match(name[len(layer_prefix):])
    return int(match.group(1)) if match else None


def relative_changes(model, base) -> tuple[dict[str, float], list[str], list[str]]:
    """({parameter: relative change} for parameters both models have, comparable row-wise; notes;
    parameters the base lacks (inserted layers, new heads)). `base` is a model or `StreamedWeights` (its
    tensors read one at a time, so the base is never resident beside the model)."""
    import torch

    from ladder.backends.hf import named_weights

    total = sum(1 for _ in model.named_parameters())
    original = _weights_of(base)
    changes, notes, new = {}, [], []
    with torch.no_grad():
        for step, (name, weight) in enumerate(named_weights(model), start=1):  # offloaded ones read one by one
            if step % 16 == 0 or step == total:
                step_progress("comparing tensors with the base", step, total)
            reference = original(name)
            if reference is None:
                new.append(name)
                continue
            w, r = weight.detach().float().cpu(), reference.detach().float().cpu()
            if w.shape != r.shape:
                rows = min(w.shape[0], r.shape[0])
                if w.shape[1:] != r.shape[1:]:
                    notes.append(f"{name}: shape {tuple(w.shape)} vs base {tuple(r.shape)}, not compared")
                    continue
                notes.append(f"{name}: {w.shape[0]} rows vs base {r.shape[0]}, first {rows} compared")
                w, r = w[:rows], r[:rows]
            norm = r.norm().item()
            diff = (w - r).norm().item()
            changes[name] = diff / norm if norm > 0 else (0.0 if diff == 0 else math.inf)
    return changes, notes, new


# ---- what the configs say was trained ----------------------------------------------------------------


def read_config(path: str) -> dict[str, Any]:
    import tomllib

    import yaml

    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".json"):
        value = json.loads(text)
    elif path.endswith(".toml"):
        value = tomllib.loads(text)
    else:
        value = yaml.safe_load(text)
    return value if isinstance(value, dict) else {}


def flat_items(values: dict[str, Any], prefix: str = ""):
    for key, value in values.items():
        if isinstance(value, dict):
            yield from flat_items(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def intentions(values: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """[{source, key, expect: trained|frozen, layers | patterns}] from config keys about freezing."""
    found = []
    for key, value in flat_items(values):
        last = key.rsplit(".", 1)[-1].lower()
        if any(w in last for w in TRAINED_WORDS) or last == "target_modules":
            expect = "trained"
        elif any(w in last for w in FROZEN_WORDS):
            expect = "frozen"
        else:
            continue
        item: dict[str, Any] = {"source": source, "key": key, "expect": expect}
        if isinstance(value, bool):
            if not value:
                continue
            subject = re.sub(r"^(freeze|frozen|unfreeze|trainable)_?", "", last)
            if not subject:
                continue
            item["patterns"] = [subject.rstrip("s")]
        elif isinstance(value, int) and ("num" in last or "first" in last or last.endswith("layers")):
            item["layers"] = list(range(value))
        elif isinstance(value, int):
            item["layers"] = [value]
        elif isinstance(value, str) and value:
            item["patterns"] = [value]
        elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            item["layers"] = list(value)
        elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            item["patterns"] = list(value)
        else:
            continue
        found.append(item)
    return found


def matches(name: str, layer: int | None, intention: dict[str, Any]) -> bool:
    if "layers" in intention:
        return layer is not None and layer in intention["layers"]
    for pattern in intention["patterns"]:
        if pattern in ("all", "all-linear"):
            return True
        try:
            if re.search(pattern, name) or pattern in name:
                return True
        except re.error:
            if pattern in name:
                return True
    return False


# ---- adapters ---------------------------------------------------------------------------------------


def merge_check(model, base, config, pairs, tolerance) -> dict[str, Any]:
    """Per adapted parameter: is W_model - W_base equal to scale·B·A (merged), zero (not applied), or else?"""
    import torch

    from ladder.backends.hf import weights_by_name

    tuned = weights_by_name(model, set(pairs))
    original = _weights_of(base) if base is not None else (lambda name: None)
    scale = lora_scale(config)
    verdicts: dict[str, list[str]] = {"merged": [], "not_applied": [], "other": [], "absent": []}
    with torch.no_grad():
        for name, pair in sorted(pairs.items()):
            reference = original(name) if name in tuned else None
            if "A" not in pair or "B" not in pair or reference is None:
                verdicts["absent"].append(name)
                continue
            expected = (pair["B"].float() @ pair["A"].float()) * scale
            actual = tuned[name].detach().float().cpu() - reference.detach().float().cpu()
            if expected.shape != actual.shape and expected.T.shape == actual.shape:
                expected = expected.T  # fan_in_fan_out layers
            size = expected.norm().item()
            if actual.norm().item() <= 1e-12 * max(1.0, reference.float().norm().item()):
                verdicts["not_applied"].append(name)
            elif size > 0 and (actual - expected).norm().item() / size <= tolerance:
                verdicts["merged"].append(name)
            else:
                verdicts["other"].append(name)
    return verdicts


def _weights_of(base):
    """name -> tensor or None, for a loaded model or `StreamedWeights`."""
    if hasattr(base, "named_parameters"):
        from ladder.backends.hf import weights_by_name

        return weights_by_name(base).get
    return base.get


def logits_difference(hf, base_hf, prompts, max_prompts) -> float:
    import torch

    from ladder.internals import probe_batch

    batch = probe_batch(hf, prompts, max_prompts=max_prompts)
    kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
              "position_ids": batch.position_ids, "use_cache": False}
    with torch.no_grad():
        a = hf.network(**kwargs).logits.float()
        b = base_hf.network(**{k: v.to(base_hf.device) for k, v in kwargs.items() if hasattr(v, "to")},
                          use_cache=False).logits.float().to(a.device)
    if a.shape != b.shape:
        width = min(a.shape[-1], b.shape[-1])
        a, b = a[..., :width], b[..., :width]
    mask = batch.attention_mask.bool()
    return float((a - b).abs()[mask].max().item())


class WeightsMoved(Probe):
    name = "weights-moved"
    needs = ("model",)
    capabilities = ("weights", "logits", "chat_template", "tokenize")
    Params = WeightsMovedParams

    def run(self, ctx: ProbeContext):
        from ladder.backends import model_backend
        from ladder.backends.hf import streamed_base
        from ladder.internals import decoder_layers, prompt_strings, rounded

        params: WeightsMovedParams = ctx.params
        case = ctx.case
        adapter_dir = find_adapter(case.model, case.run_dir)
        if not case.base and adapter_dir is None:
            skip("needs --base PATH (case key `base`) to measure how far the weights moved "
                 "(or an adapter_config.json next to the model)")

        problems: list[str] = []
        warnings: list[str] = []
        notes: list[str] = []
        evidence: dict[str, Any] = {}
        hf = model_backend(ctx, "model")
        model = hf.network
        layer_prefix, layers = decoder_layers(model)
        evidence["layers"] = len(layers)

        adapter_config: dict[str, Any] = {}
        pairs: dict[str, dict[str, Any]] = {}
        if adapter_dir is not None:
            ctx.progress("reading the adapter", 0.1)
            try:
                adapter_config, pairs, problem = adapter_pairs(adapter_dir)
            except (OSError, ValueError) as exc:
                return failed(f"the adapter in {adapter_dir} cannot be read: {exc}", adapter=str(adapter_dir))
            adapter_info: dict[str, Any] = {"folder": str(adapter_dir), "peft_type": adapter_config.get("peft_type"),
                                            "r": adapter_config.get("r"),
                                            "lora_alpha": adapter_config.get("lora_alpha"),
                                            "target_modules": adapter_config.get("target_modules"),
                                            "base_model_name_or_path": adapter_config.get("base_model_name_or_path"),
                                            "pairs": len(pairs)}
            if problem:
                problems.append(f"adapter: {problem}")
            norms_b = [float(p["B"].float().norm()) for p in pairs.values() if "B" in p]
            norms_a = [float(p["A"].float().norm()) for p in pairs.values() if "A" in p]
            adapter_info["lora_B_norm_total"] = sum(norms_b)
            adapter_info["lora_A_norm_total"] = sum(norms_a)
            evidence["adapter"] = adapter_info
            if pairs and (sum(norms_b) == 0 or sum(norms_a) == 0):
                problems.append(f"the adapter's weights are zero ({'lora_B' if sum(norms_b) == 0 else 'lora_A'} "
                                f"all 0 in {len(pairs)} modules): it was saved before any training step")
            elif not pairs and not problem:
                notes.append("adapter_config.json found but no LoRA A/B weights in the adapter file")
            notes.append("adapter read from its safetensors directly (peft not used)")

        if not case.base:
            evidence["notes"] = notes + ["no --base: how far the weights moved was not measured"]
            if problems:
                return failed("; ".join(problems), **evidence)
            if (hf.loading_info or {}).get("adapter_merged"):  # the case's model is the adapter folder itself
                return passed(f"the adapter holds trained weights ({len(pairs)} LoRA pairs), merged by ladder into "
                              "its base as the model it runs", **evidence)
            return warned("the adapter holds trained weights, but without --base ladder cannot tell whether the "
                          "model it loads has them applied", **evidence)

        ctx.progress("relative change per parameter, the base's tensors read one at a time", 0.3)
        base_weights = streamed_base(ctx, model)
        evidence["base_read"] = "streamed from its safetensors" if base_weights is not None else "loaded"
        if base_weights is None:
            base_weights = model_backend(ctx, "base").network
        changes, compare_notes, new_parameters = relative_changes(model, base_weights)
        notes.extend(compare_notes[:20])
        if new_parameters:
            evidence["parameters_not_in_base"] = len(new_parameters)
            notes.append(f"{len(new_parameters)} parameters are not in the base (first: {new_parameters[0]}): "
                         "inserted layers or modules count as changed")
        groups = ("attention", "mlp", "norm", "other")
        per_layer: list[list[float]] = [[] for _ in layers]
        per_group: dict[str, list[list[float]]] = {g: [[] for _ in layers] for g in groups}
        outside: dict[str, float] = {}
        for name, change in changes.items():
            layer = layer_of(name, layer_prefix)
            if layer is None or layer >= len(layers):
                outside[name] = change
                continue
            per_layer[layer].append(change)
            per_group[group_of(name)][layer].append(change)

        def mean(values: list[float]) -> float:
            return sum(values) / len(values) if values else float("nan")

        series = {"relative_change": rounded([mean(v) for v in per_layer], 8)}
        for group in groups:
            if any(per_group[group]):
                series[f"relative_change_{group}"] = rounded([mean(v) for v in per_group[group]], 8)
        evidence["series"] = series
        evidence["outside_layers"] = {k: round(v, 8) for k, v in sorted(outside.items())}
        unmoved = sorted(n for n, c in changes.items() if c < params.unmoved_below)
        evidence["unmoved_parameters"] = len(unmoved)
        evidence["parameters_compared"] = len(changes)
        new_layers = {layer_of(n, layer_prefix) for n in new_parameters} - {None}
        layer_moved = [any(c >= params.unmoved_below for c in v) or i in new_layers for i, v in enumerate(per_layer)]

        flagged: set[int] = set()
        intended = intentions(adapter_config, ADAPTER_CONFIG) if adapter_config else []
        if adapter_config.get("layers_to_transform") is not None and adapter_config.get("target_modules"):
            intended = [i for i in intended if i["key"] != "target_modules"]  # layers already say where
        if case.train_config:
            try:
                intended += intentions(read_config(case.train_config), Path(case.train_config).name)
            except (OSError, ValueError) as exc:
                notes.append(f"training config not read: {exc}")
        merged_adapter = False
        if pairs and case.base:
            verdicts = merge_check(model, base_weights, adapter_config, pairs, params.merge_tolerance)
            evidence["adapter_merge"] = {k: len(v) for k, v in verdicts.items()}
            evidence["adapter_merge_examples"] = {k: v[:5] for k, v in verdicts.items() if v}
            merged_adapter = bool(verdicts["merged"]) and not verdicts["not_applied"]
        mismatches: list[dict[str, Any]] = []
        for intention in intended:
            hits = [n for n in changes if matches(n, layer_of(n, layer_prefix), intention)]
            if not hits:
                continue
            if intention["expect"] == "trained":
                still = [n for n in hits if changes[n] < params.unmoved_below]
                if still and not (intention["source"] == ADAPTER_CONFIG and not merged_adapter):
                    mismatches.append({**intention, "did_not_move": still[:10], "count": len(still)})
            else:
                moved = [n for n in hits if changes[n] >= params.unmoved_below]
                if moved:
                    mismatches.append({**intention, "moved": moved[:10], "count": len(moved)})
            for name in hits:
                layer = layer_of(name, layer_prefix)
                if layer is not None and any(name in m.get("did_not_move", []) + m.get("moved", [])
                                             for m in mismatches):
                    flagged.add(layer)
        evidence["intended"] = [{k: v for k, v in i.items()} for i in intended][:20]
        if mismatches:
            evidence["mismatches"] = mismatches
            for m in mismatches:
                what = "did not move" if m["expect"] == "trained" else "moved although frozen"
                problems.append(f"{m['count']} parameters {m['source']} `{m['key']}` names as {m['expect']} {what}")

        if changes and len(unmoved) == len(changes) and not new_parameters:
            ctx.progress("tuned vs base logits", 0.8)
            difference = logits_difference(hf, model_backend(ctx, "base"), prompt_strings(case), params.max_prompts)
            evidence["max_logit_difference_to_base"] = difference
            identical = difference <= params.logits_tolerance
            if pairs and evidence.get("adapter", {}).get("lora_B_norm_total", 0) > 0:
                problems.insert(0, "the adapter holds trained weights but is not applied or merged: every weight "
                                   "equals the base's" + (" and the logits on the probe prompts are identical"
                                                          if identical else ""))
            else:
                problems.insert(0, "no weight moved from the base" + (": the logits on the probe prompts are "
                                                                       "identical" if identical else ""))
        elif pairs and evidence.get("adapter_merge", {}).get("not_applied"):
            problems.append(f"{evidence['adapter_merge']['not_applied']} adapted modules equal the base: the "
                            "adapter is not merged into them")
        elif pairs and evidence.get("adapter_merge", {}).get("other"):
            warnings.append(f"{evidence['adapter_merge']['other']} adapted modules differ from the base by "
                            "something other than the adapter's B·A")
        unmoved_layers = [i for i, moved in enumerate(layer_moved) if not moved]
        if unmoved_layers and len(unmoved_layers) < len(layers) and not intended:
            warnings.append(f"layers {unmoved_layers} did not move while others did (no config says they were frozen)")
            flagged |= set(unmoved_layers)
        evidence["flagged"] = sorted(flagged)
        if notes:
            evidence["notes"] = notes
        if problems:
            return failed("; ".join(problems), **evidence)
        if warnings:
            return warned("; ".join(warnings), **evidence)
        moved_share = 1 - len(unmoved) / max(1, len(changes))
        return passed(f"{moved_share:.0%} of parameters moved from the base (median relative change "
                      f"{sorted(changes.values())[len(changes) // 2]:.3g})"
                      + (", the adapter is merged" if merged_adapter else ""), **evidence)
