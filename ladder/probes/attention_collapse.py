"""Rung `attention-collapse`: heads collapse onto one position or their entropy vanishes.

What it checks:
    One forward pass of the probe batch with hooks on every attention module that reduce its
    attention weights on the fly to two numbers per head: the entropy of the attention
    distribution as a share of the largest possible (log of the number of visible tokens; the
    first few query positions, which can see almost nothing, are left out), and the share of mass
    on each row's first token. Where the attention implementation returns no weights (SDPA,
    flash), the pass runs with the eager implementation and says so. A head has collapsed when
    its normalised entropy is under `entropy_floor`; the rung fails when the share of collapsed
    heads exceeds `max_collapsed_share`, or, with `--base`, when heads that were not collapsed in
    the base are collapsed now beyond `max_new_collapsed_share`.

Why it matters:
    A head whose attention is one-hot (or always on the first token) passes nothing of the
    context: a fine-tune with too high a learning rate, a broken positional encoding, or
    attention logits blown up by a bad merge or a scaling bug leave the model blind to its prompt
    while its output stays fluent.

Symptom:
    Answers that ignore the prompt or repeat one token; the same reply to different
    questions; degradation that grows with prompt length.

Fix:
    Lower the learning rate or add warmup and gradient clipping and retrain from the last good
    checkpoint; check the rotary/positional settings (rope scaling, max positions) against the
    base's config; look for a scale applied twice to queries or keys (a merge or conversion bug).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ladder.probes.base import Probe, ProbeContext, failed, passed, warned


class AttentionCollapseParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_prompts: int = Field(default=8, ge=1, description="Probe prompts in the batch.")
    min_visible: int = Field(default=4, ge=2,
                             description="Query positions that see fewer tokens than this are left out.")
    entropy_floor: float = Field(default=0.05, ge=0, le=1,
                                 description="Normalised entropy under which a head has collapsed.")
    max_collapsed_share: float = Field(default=0.5, ge=0, le=1,
                                       description="Share of collapsed heads beyond which the rung fails.")
    max_new_collapsed_share: float = Field(default=0.25, ge=0, le=1,
                                           description="With --base: share of newly collapsed heads that fails.")
    first_mass_warn: float = Field(default=0.98, ge=0, le=1,
                                   description="Mean mass on the first token above which a head only looks there "
                                               "(counted, not failed: attention sinks are normal).")


def head_statistics(hf, batch, min_visible: int) -> dict[str, Any]:
    """Per layer and head: mean normalised entropy and mean mass on the first real token."""
    import torch

    from ladder.internals import attention_module, decoder_layers

    model = hf.network
    _, layers = decoder_layers(model)
    modules = [attention_module(layer) for layer in layers]
    if any(m is None for m in modules):
        raise ValueError("a decoder layer has no attention module ladder can hook")
    mask = batch.attention_mask.bool()
    first = mask.long().argmax(dim=-1)
    visible = mask.long().cumsum(-1)  # keys each query position can see (causal, real tokens)
    queries = mask & (visible >= min_visible)
    log_visible = torch.log(visible.clamp(min=2).float())
    entropy: list[list[float] | None] = [None] * len(layers)
    first_mass: list[list[float] | None] = [None] * len(layers)

    def make_hook(index: int):
        def hook(_module, _args, output):
            weights = output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
            if weights is None:
                return
            w = weights.detach().float()  # (batch, heads, query, key)
            h = -(w * torch.log(w.clamp(min=1e-30))).sum(-1)  # (batch, heads, query)
            normalised = h / log_visible[:, None, :]
            sel = queries[:, None, :].expand_as(normalised)
            count = sel.sum(dim=(0, 2)).clamp(min=1)
            entropy[index] = ((normalised * sel).sum(dim=(0, 2)) / count).tolist()
            index_first = first.to(w.device).view(-1, 1, 1, 1).expand(w.shape[0], w.shape[1], w.shape[2], 1)
            on_first = w.gather(-1, index_first).squeeze(-1)
            first_mass[index] = ((on_first * sel).sum(dim=(0, 2)) / count).tolist()
        return hook

    original = getattr(model.config, "_attn_implementation", None)
    switched = None
    handles = [m.register_forward_hook(make_hook(i)) for i, m in enumerate(modules)]
    try:
        kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                  "position_ids": batch.position_ids, "use_cache": False}
        with torch.no_grad():
            if original not in (None, "eager") and hasattr(model, "set_attn_implementation"):
                # SDPA and flash kernels return no weights: the one pass runs the eager implementation
                model.set_attn_implementation("eager")
                switched = original
                model(**kwargs)
            else:
                model(**kwargs, output_attentions=False)
            if any(e is None for e in entropy) and switched is None:
                raise ValueError(f"the {original} attention returns no weights and the model cannot switch "
                                 "to eager attention")
    finally:
        for handle in handles:
            handle.remove()
        if switched is not None:
            model.set_attn_implementation(switched)
    if any(e is None for e in entropy):
        raise ValueError("the attention modules returned no weights even with eager attention")
    return {"entropy": entropy, "first_mass": first_mass, "switched_from": switched,
            "implementation": "eager" if switched else original}


def flatten(per_layer: list[list[float]]) -> list[float]:
    return [v for layer in per_layer for v in layer]


class AttentionCollapse(Probe):
    name = "attention-collapse"
    needs = ("model",)
    capabilities = ("hidden_states", "chat_template", "tokenize")
    Params = AttentionCollapseParams

    def run(self, ctx: ProbeContext):
        from ladder.backends import model_backend
        from ladder.internals import probe_batch, prompt_strings, rounded

        params: AttentionCollapseParams = ctx.params
        hf = model_backend(ctx, "model")
        batch = probe_batch(hf, prompt_strings(ctx.case), max_prompts=params.max_prompts)
        if int(batch.attention_mask.sum(-1).max()) < params.min_visible:
            from ladder.probes.base import skip

            skip(f"the probe prompts are shorter than {params.min_visible} tokens: give longer `prompts` in the case")
        ctx.progress("attention weights, one forward pass", 0.2)
        stats = head_statistics(hf, batch, params.min_visible)
        heads = len(stats["entropy"][0])
        entropy = flatten(stats["entropy"])
        first_mass = flatten(stats["first_mass"])
        collapsed = [i for i, e in enumerate(entropy) if math.isfinite(e) and e < params.entropy_floor]
        sinks = [i for i, m in enumerate(first_mass) if m > params.first_mass_warn]
        total = len(entropy)

        def named(indices: list[int]) -> list[list[int]]:
            return [[i // heads, i % heads] for i in indices]

        evidence: dict[str, Any] = {
            "layers": len(stats["entropy"]), "heads_per_layer": heads, "probe_batch": batch.describe(),
            "attention_implementation": stats["implementation"],
            "series": {"entropy": rounded(entropy, 4), "first_position_mass": rounded(first_mass, 4)},
            "series_index": "layer * heads_per_layer + head",
            "collapsed_heads": named(collapsed), "first_token_only_heads": named(sinks),
            "thresholds": {"entropy_floor": params.entropy_floor, "max_collapsed_share": params.max_collapsed_share},
        }
        if stats["switched_from"]:
            evidence["notes"] = [f"the model runs {stats['switched_from']} attention, whose kernels return no "
                                 "weights: this pass used the eager implementation of the same attention"]
        flagged = list(collapsed)
        new_share = None
        if ctx.case.base and collapsed:  # the base tells which collapses are new; none to tell, no base pass
            ctx.progress("the base model's heads", 0.6)
            base = model_backend(ctx, "base")
            base_stats = head_statistics(base, probe_batch(base, prompt_strings(ctx.case),
                                                           max_prompts=params.max_prompts), params.min_visible)
            base_entropy = flatten(base_stats["entropy"])
            evidence["series"]["base_entropy"] = rounded(base_entropy, 4)
            evidence["series"]["base_first_position_mass"] = rounded(flatten(base_stats["first_mass"]), 4)
            if len(base_entropy) == total:
                new = [i for i in collapsed if not base_entropy[i] < params.entropy_floor]
                new_share = len(new) / total
                evidence["newly_collapsed_heads"] = named(new)
                flagged = new
            else:
                evidence.setdefault("notes", []).append(
                    f"the base has {len(base_entropy)} heads, the model {total}: compared by totals only")
        evidence["flagged"] = flagged
        share = len(collapsed) / total if total else 0.0
        evidence["collapsed_share"] = round(share, 4)
        if new_share is not None and new_share > params.max_new_collapsed_share:
            return failed(f"{len(flagged)} of {total} heads collapsed that were not collapsed in the base "
                          f"(normalised entropy < {params.entropy_floor})", **evidence)
        if share > params.max_collapsed_share and (new_share is None or new_share > 0):
            return failed(f"{len(collapsed)} of {total} heads have collapsed (normalised entropy < "
                          f"{params.entropy_floor}); median entropy {sorted(entropy)[total // 2]:.3f}", **evidence)
        if collapsed:
            return warned(f"{len(collapsed)} of {total} heads have collapsed (normalised entropy < "
                          f"{params.entropy_floor}), under the {params.max_collapsed_share:.0%} that fails", **evidence)
        return passed(f"no collapsed head among {total}: normalised entropy from {min(entropy):.3f} to "
                      f"{max(entropy):.3f}; {len(sinks)} heads look only at the first token", **evidence)
