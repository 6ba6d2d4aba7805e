"""Rung `seam-damage`: a discontinuity between consecutive layers breaks the residual stream.

What it checks:
    One forward pass of the probe batch (conversations from `--eval-data`/`--data` when given, else
    the case's prompts, through the model's chat template)
    with hooks on the decoder layers that reduce each layer's output on the fly: the residual
    stream's norm, the cosine similarity and relative update between consecutive layers' hidden
    states, and the logit-lens loss of each layer (its hidden state through the final norm and the
    output head, next-token cross-entropy). Memory stays O(layers): only the previous layer's
    hidden state is kept. A robust outlier test (median and MAD) over the per-layer changes flags
    seam indices; layers that are exact copies of an earlier layer (or, with `--base`, of the base's
    layers out of order) mark where a merge spliced blocks. An outlier counts as a seam only next to
    such structural evidence: alone (many healthy models change most at their first and last
    layers) it is a warning. A structural seam is damage when the
    final loss is above the best logit-lens loss the layers before the seam reached (the inserted
    stack makes the predictions worse), or when the probe batch's loss is worse than with the copied
    layers bypassed (each passes its input through: the model before the merge), by more than
    `lens_jump`; with `--base` of the same depth, an outlier the base shows too is not a seam of
    this checkpoint.

Why it matters:
    Frankenmerges that insert or duplicate layers, and blocks spliced from another model, feed a
    layer hidden states unlike those it was trained on. The model still produces fluent text, so
    the damage looks like a subtle behaviour problem until the layers are measured one by one.

Symptom:
    A merged or surgically edited model that is fluent but worse than its parts; the
    logit-lens loss rises at one depth instead of falling; one layer rewrites most of the
    residual stream.

Fix:
    Move the seam (merge at layers whose hidden states agree, compare cosine similarity across
    candidate cut points), heal it with a short continued-pretraining run over the merged
    model, or drop the inserted block. Compare against the unmerged model with `--base`.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ladder.probes.base import Probe, ProbeContext, failed, passed, warned

SERIES_FOR_OUTLIERS = ("relative_update", "cosine_drop", "lens_loss_delta")


class SeamDamageParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_prompts: int = Field(default=8, ge=1, description="Probe prompts in the batch.")
    z_threshold: float = Field(default=6.0, gt=0,
                               description="Robust z-score (median/MAD) beyond which a layer's change is a seam.")
    edge_layers: int = Field(default=1, ge=0,
                             description="Layers at each end left out of the outlier test (they differ in any model).")
    min_layers: int = Field(default=6, ge=3,
                            description="Fewest layers for the outlier test; shallower models rely on the other tests.")
    lens_jump: float = Field(default=0.1, ge=0,
                             description="Rise of the logit-lens loss (nats) at a seam that counts as damage.")
    duplicate_tolerance: float = Field(default=1e-4, ge=0,
                                       description="Relative weight difference under which two layers are copies.")


def layer_fingerprints(model) -> list[list[float]]:
    """Per decoder layer, a small vector that identifies its weights: per tensor its norm, sum and
    a few strided values (cheap, O(parameters) once)."""
    import torch

    from ladder.backends.hf import named_weights
    from ladder.internals import decoder_layers

    _, layers = decoder_layers(model)
    with torch.no_grad():  # each tensor read while yielded: an offloaded one is dropped after
        return [tensors_print(named_weights(layer)) for layer in layers]


def tensors_print(tensors) -> list[float]:
    """The fingerprint of a layer's (name, tensor) pairs: per tensor, in name order, its norm, sum and a few
    strided values."""
    per_tensor: dict[str, list[float]] = {}
    for name, tensor in tensors:
        flat = tensor.detach().reshape(-1).float()
        step = max(1, flat.numel() // 7)
        per_tensor[name] = [float(flat.norm()), float(flat.sum()), *(float(v) for v in flat[::step][:8])]
    return [v for _, values in sorted(per_tensor.items()) for v in values]


def streamed_fingerprints(model, weights) -> list[list[float]]:
    """`layer_fingerprints` of a checkpoint of the model's architecture, read tensor by tensor from its files
    (`StreamedWeights`: the base is never loaded beside the model to compare weights). Its tensors are taken
    in the model's dtype, as a load of it for this run would hold them."""
    from ladder.internals import decoder_layers

    path, layers = decoder_layers(model)
    inner = [name for name, _ in layers[0].named_parameters()] if layers else []
    dtype = next(model.parameters()).dtype
    held = set(weights.names())
    prints = []
    while inner and f"{path}.{len(prints)}.{inner[0]}" in held:
        names = [name for name in inner if f"{path}.{len(prints)}.{name}" in held]
        prints.append(tensors_print((name, weights.get(f"{path}.{len(prints)}.{name}").to(dtype)) for name in names))
    return prints


def same_print(a: list[float], b: list[float], tolerance: float) -> bool:
    if len(a) != len(b) or not a:
        return False
    scale = math.sqrt(sum(x * x for x in a)) or 1.0
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b))) <= tolerance * scale


def duplicate_sources(prints: list[list[float]], tolerance: float) -> list[int | None]:
    """For each layer, the earliest earlier layer it is a copy of (None when it is its own)."""
    sources: list[int | None] = []
    for i, p in enumerate(prints):
        sources.append(next((j for j in range(i) if same_print(prints[j], p, tolerance)), None))
    return sources


def structural_seams(sources: list[int | None]) -> list[int]:
    """Where a run of copied layers starts, or where the copied source jumps (a new block)."""
    seams = []
    for i, source in enumerate(sources):
        if source is None:
            continue
        previous = sources[i - 1] if i > 0 else None
        if previous is None or source != previous + 1:
            seams.append(i)
    return seams


def base_mapping(prints: list[list[float]], base_prints: list[list[float]], tolerance: float) -> list[int | None]:
    """For each layer, the base layer it equals (None when none: trained or foreign weights)."""
    return [next((j for j, q in enumerate(base_prints) if same_print(q, p, tolerance)), None) for p in prints]


def mapping_seams(mapping: list[int | None]) -> list[int]:
    """Layers copied from the base whose predecessor was not the base's preceding layer."""
    seams = []
    for i in range(1, len(mapping)):
        if mapping[i] is not None and mapping[i - 1] is not None and mapping[i] != mapping[i - 1] + 1:
            seams.append(i)
    return seams


def measure_layers(hf, batch) -> dict[str, list[float]]:
    """The per-layer series of one hooked forward pass over `batch`."""
    import torch

    from ladder.internals import LayerSeries, final_norm, forward_with_layer_hooks, lens_loss, next_token_targets, \
        token_mask

    model = hf.network
    norm = final_norm(model)
    head = model.get_output_embeddings()
    mask = token_mask(batch).to(batch.input_ids.device)
    valid, targets = next_token_targets(batch)
    out = LayerSeries()
    embedding: dict[str, float] = {}

    def on_embeddings(hidden) -> None:
        embedding["norm"] = float(hidden.float().norm(dim=-1)[mask].mean())

    def on_layer(index: int, hidden, previous) -> None:
        h = hidden.float()
        token_norms = h.norm(dim=-1)[mask]
        out.add("residual_norm", token_norms.mean())
        if previous is not None and previous.shape == hidden.shape:
            p = previous.float()
            cos = torch.nn.functional.cosine_similarity(h, p, dim=-1)[mask]
            update = (h - p).norm(dim=-1)[mask] / p.norm(dim=-1)[mask].clamp(min=1e-12)
            out.add("cosine_to_previous", cos.mean())
            out.add("relative_update", update.mean())
        else:
            out.add("cosine_to_previous", float("nan"))
            out.add("relative_update", float("nan"))
        out.add("lens_loss", lens_loss(hidden, norm, head, valid, targets))

    forward_with_layer_hooks(model, batch, on_layer, on_embeddings)
    series = out.series
    series["cosine_drop"] = [1.0 - c for c in series["cosine_to_previous"]]
    lens = series["lens_loss"]
    series["lens_loss_delta"] = [float("nan")] + [lens[i] - lens[i - 1] for i in range(1, len(lens))]
    series["_embedding_norm"] = [embedding.get("norm", float("nan"))]
    return series


@contextlib.contextmanager
def bypassing(model, skipped: set[int]):
    """While the block runs, the `skipped` decoder layers pass their input through unchanged: for a stack
    with copied layers, the model as it was before they were inserted (forward passes and generate)."""
    import torch

    from ladder.internals import decoder_layers, first_tensor

    _, layers = decoder_layers(model)
    inputs: dict[int, Any] = {}
    handles = []

    def keep_input(index: int):
        def pre(_module, args, kwargs):
            inputs[index] = args[0] if args else kwargs.get("hidden_states")
        return pre

    def pass_through(index: int):
        def hook(_module, _args, output):
            hidden = inputs.pop(index)
            if isinstance(output, torch.Tensor):
                return hidden
            if isinstance(output, tuple) and output and first_tensor(output) is not None:
                return (hidden, *output[1:])
            return output
        return hook

    for index in sorted(skipped):
        handles.append(layers[index].register_forward_pre_hook(keep_input(index), with_kwargs=True))
        handles.append(layers[index].register_forward_hook(pass_through(index)))
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()


def loss_without_layers(model, batch, skipped: set[int]) -> float:
    """Mean next-token loss of the probe batch's replies (its whole rows when it has none) with the `skipped`
    decoder layers bypassed (see `bypassing`)."""
    import torch

    from ladder.internals import reply_targets

    with bypassing(model, skipped), torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids, use_cache=False).logits
    valid, targets = reply_targets(batch)
    logits = logits[:, :-1][valid].float()
    if logits.numel() == 0:
        return float("nan")
    return float(torch.nn.functional.cross_entropy(logits, targets[valid]))


def reference_replies(ctx, hf, prompts: list[str], skipped: set[int], max_new_tokens: int = 24) -> list[str]:
    """Greedy replies of the stack without its copied layers (the model before the merge), through the
    template: text the merged stack should predict about as well if the inserted layers did no harm."""
    from ladder.harness.compare import generate_through_template, template_analysis

    analysis = template_analysis(ctx, hf)
    with bypassing(hf.network, skipped):
        replies = generate_through_template(hf, analysis, prompts, max_new_tokens)
    return [hf.tokenizer.decode(reply, skip_special_tokens=True) for reply in replies]


def activation_outliers(series: dict[str, list[float]], params: SeamDamageParams) -> dict[str, list[int]]:
    """Per series, the interior layers whose change is a robust outlier (upwards: more change, worse loss)."""
    from ladder.internals import median, outliers

    layers = len(series["lens_loss"])
    if layers < params.min_layers:
        return {}
    edges = set(range(params.edge_layers)) | set(range(layers - params.edge_layers, layers))
    found = {}
    for name in SERIES_FOR_OUTLIERS:
        values = series[name]
        finite = [v for v in values if math.isfinite(v)]
        # a floor on the spread: a flat series must not turn noise into seams
        floor = {"lens_loss_delta": params.lens_jump / 2,
                 "relative_update": 0.1 * abs(median(finite)) if finite else 0.0,
                 "cosine_drop": 0.02}[name]
        flagged = outliers(values, params.z_threshold, floor=floor, skip=edges | {0}, direction="high")
        if name == "lens_loss_delta":
            flagged = [i for i in flagged if values[i] > params.lens_jump]
        if flagged:
            found[name] = flagged
    return found


class SeamDamage(Probe):
    name = "seam-damage"
    needs = ("model",)
    capabilities = ("hidden_states", "weights", "chat_template", "tokenize", "generate")
    Params = SeamDamageParams

    def run(self, ctx: ProbeContext):
        from ladder.backends import model_backend
        from ladder.internals import decoder_layers, probe_batch, probe_texts, rounded

        params: SeamDamageParams = ctx.params
        hf = model_backend(ctx, "model")
        ctx.progress("one hooked forward pass over the probe batch", 0.1)
        prompts, answers = probe_texts(ctx, params.max_prompts)
        from_data = bool(ctx.case.eval_data or ctx.case.data) and answers is not None
        batch = probe_batch(hf, prompts, max_prompts=params.max_prompts, answers=answers)
        series = measure_layers(hf, batch)
        layer_path, layers = decoder_layers(hf.network)
        n_layers = len(layers)
        ctx.progress("layer fingerprints", 0.5)
        prints = layer_fingerprints(hf.network)
        sources = duplicate_sources(prints, params.duplicate_tolerance)
        seams = set(structural_seams(sources))
        outliers = activation_outliers(series, params)
        notes: list[str] = []
        if n_layers < params.min_layers:
            notes.append(f"{n_layers} layers: too few for the outlier test (min_layers {params.min_layers}); "
                         "judged on copied layers and logit-lens jumps only")

        evidence: dict[str, Any] = {
            "layers": n_layers, "layer_list": layer_path, "probe_batch": batch.describe(),
            "copied_from": [s if s is not None else -1 for s in sources],
        }
        plotted = {name: rounded(series[name]) for name in
                   ("residual_norm", "cosine_to_previous", "relative_update", "lens_loss")}

        base_outliers: dict[str, list[int]] = {}
        if ctx.case.base:
            from ladder.backends.hf import streamed_base

            ctx.progress("the base model's layer fingerprints", 0.7)
            streamed = streamed_base(ctx, hf.network)
            base_prints = streamed_fingerprints(hf.network, streamed) if streamed is not None \
                else layer_fingerprints(model_backend(ctx, "base").network)
            base_layers = len(base_prints)
            evidence["base_layers"] = base_layers
            mapping = base_mapping(prints, base_prints, params.duplicate_tolerance)
            evidence["base_layer_of"] = [m if m is not None else -1 for m in mapping]
            seams |= set(mapping_seams(mapping))
            if base_layers != n_layers:
                notes.append(f"the model has {n_layers} layers, its base {base_layers}: layers were inserted "
                             "or removed")
            if seams or any(outliers.values()):  # the base's own series, beside a seam or a layer that stands out
                ctx.progress("the base model's series", 0.75)
                base = model_backend(ctx, "base")
                base_series = measure_layers(base, probe_batch(base, prompts, max_prompts=params.max_prompts,
                                                                 answers=answers))
                for name in ("residual_norm", "cosine_to_previous", "lens_loss"):
                    plotted[f"base_{name}"] = rounded(base_series[name])
                if base_layers == n_layers:
                    base_outliers = activation_outliers(base_series, params)
            else:
                notes.append("the base model's series not measured: no seam and no layer that stands out here")

        lens = series["lens_loss"]
        # damage: the stack after a seam predicts worse than the layers before it already did
        rise = {i: lens[-1] - min(lens[:i]) for i in seams if i > 0}
        damaged_seams = sorted(i for i, r in rise.items() if r > params.lens_jump)
        copies = {i for i, source in enumerate(sources) if source is not None}
        if copies:
            # the direct measurement: the same stack with its copied layers bypassed is the model before the merge
            ctx.progress("the probe batch with the copied layers bypassed", 0.6)
            scored = batch
            if not from_data:  # no text of the user's: the model before the merge says what good replies are
                replies = reference_replies(ctx, hf, prompts[: params.max_prompts], copies)
                kept = [(p, r) for p, r in zip(prompts, replies) if r.strip()]
                if kept:
                    scored = probe_batch(hf, [p for p, _ in kept], max_prompts=params.max_prompts,
                                         answers=[r for _, r in kept])
            merged_loss = loss_without_layers(hf.network, scored, set())
            unmerged = loss_without_layers(hf.network, scored, copies)
            merge_cost = merged_loss - unmerged
            evidence["loss_without_copied_layers"] = {
                "copied_layers": sorted(copies),
                "on": ("your data's replies" if from_data else "the replies of the model without its copied layers")
                if scored.reply_starts else "prompts",
                "loss": round(merged_loss, 4), "loss_bypassing_copies": round(unmerged, 4),
                "rise": round(merge_cost, 4)}
            if merge_cost > params.lens_jump:
                damaged_seams = sorted(set(damaged_seams) | {i for i in seams if i in copies})
        shared = {i for found in base_outliers.values() for i in found}
        seam_outliers = {name: [i for i in found if i not in shared] for name, found in outliers.items()}
        seam_outliers = {name: found for name, found in seam_outliers.items() if found}
        if shared:
            notes.append(f"layers {sorted(shared)} stand out in the base model too: not seams of this checkpoint")
        outlier_layers = {i for found in seam_outliers.values() for i in found}
        # an outlier is a seam only where the weights say a block was copied or spliced (one layer either side):
        # many healthy models change most at their first and last layers
        structural = {j for i in seams for j in (i - 1, i, i + 1)}
        unexplained = sorted(outlier_layers - structural)
        seam_outliers = {name: [i for i in found if i in structural] for name, found in seam_outliers.items()}
        seam_outliers = {name: found for name, found in seam_outliers.items() if found}
        flagged = sorted(set(damaged_seams) | {i for found in seam_outliers.values() for i in found})
        evidence["unexplained_outliers"] = unexplained

        evidence.update(series=plotted, flagged=flagged, structural_seams=sorted(seams),
                        loss_rise_after_seam={str(i): round(r, 4) for i, r in sorted(rise.items())},
                        damaged_seams=damaged_seams, outliers=seam_outliers,
                        embedding_norm=rounded(series["_embedding_norm"])[0],
                        thresholds={"z": params.z_threshold, "lens_jump": params.lens_jump})
        if notes:
            evidence["notes"] = notes
        if not all(math.isfinite(v) for v in lens):
            return failed("the logit-lens loss is not finite at some layers: the residual stream overflows or "
                          "holds NaN (see the numerics rung)", **evidence)
        if flagged:
            where = ", ".join(str(i) for i in flagged)
            why = []
            merged = evidence.get("loss_without_copied_layers")
            if damaged_seams and merged and merged["rise"] > params.lens_jump:
                why.append(f"copied layers start at {damaged_seams}, and the loss on {merged['on']} is "
                           f"{merged['loss']:.2f} nats/token against {merged['loss_bypassing_copies']:.2f} with "
                           f"the copies bypassed ({merged['rise']:+.2f}: the inserted layers make it worse)")
            elif damaged_seams:
                why.append(f"copied or spliced layers start at {damaged_seams}, and the final loss is "
                           + ", ".join(f"{rise[i]:+.2f}" for i in damaged_seams if i in rise)
                           + " nats/token above the best logit-lens loss before the seam")
            if seam_outliers:
                why.append("; ".join(f"{name} jumps at {found}" for name, found in seam_outliers.items()))
            return failed(f"seam at layer {where}: " + "; ".join(why), **evidence)
        if seams:
            return warned(f"layers {sorted(seams)} start copied or spliced blocks, but the residual stream "
                          "shows no damage there", **evidence)
        if unexplained:
            return warned(f"the per-layer changes stand out at layers {unexplained}, but no layer is a copy or "
                          "splice of another: a shape many healthy models have (give --base to compare with "
                          "the unmerged model)", **evidence)
        if n_layers < params.min_layers and not ctx.case.base:
            summary = (f"no copied layers and no logit-lens jump in {n_layers} layers "
                       f"(too few for the outlier test)")
        else:
            summary = f"no seam in {n_layers} layers: no copied block, no outlier in the per-layer changes"
        return passed(summary, **evidence)
