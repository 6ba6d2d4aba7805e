"""Rung `numerics`: NaN/inf weights or activations, reduced-precision overflow, dropout left on,
attention implementations that disagree.

What it checks:
    Every weight tensor for NaN or inf (by name). One forward pass of the probe batch in each
    reduced precision the model runs in (the dtype it loads in, the dtype your harness ran it in
    as the tap recorded, and any the rung's `dtypes` asks for; a failure there fails) and in the
    `probe_dtypes` (float16, bfloat16; off your path, so on the batch's first two prompts, and a
    failure there warns) against the same pass in float32 (of those rows: the whole batch only where a
    reduced precision is on your path):
    per decoder layer the largest |activation| against the dtype's largest finite value, and the
    KL divergence of the next-token distributions. A reduced precision is applied one block (decoder
    layer, embedding, head) at a time, so the model is never copied: at most one layer exists twice.
    Whether your harness called the model in training mode (from the tap's recordings, when a
    harness ran), and whether two identical forward passes of the batch's first two prompts in that
    mode agree (dropout active). Where the model offers both, the eager and SDPA attention
    implementations on the batch's most and least padded prompts (the float32 reference of a float32
    model is the loaded implementation's side: no pass is made twice).

Why it matters:
    A model trained in bfloat16 and run in float16 can overflow to inf in its residual stream:
    the output turns to NaN, a repeated token or garbage that looks like a training failure.
    A harness that forgets `model.eval()` samples through dropout, so answers change between
    identical calls. These are runtime faults; nothing about the weights is wrong.

Symptom:
    NaN loss or logits; fluent output in float32 that turns to garbage in float16; the same
    prompt giving different greedy answers on two calls; an attention backend change that
    changes the answers.

Fix:
    Run the model in the dtype it was trained in (bfloat16 or float32 instead of float16), or
    keep the overflowing layers in float32; call `model.eval()` before generating; replace
    NaN/inf weights from a clean checkpoint (and find the step that produced them); report a
    disagreeing attention implementation and pin `attn_implementation` to the one that agrees
    with eager.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ladder.probes.base import Probe, ProbeContext, failed, passed, warned

REDUCED = ("float16", "bfloat16")


class NumericsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_prompts: int = Field(default=8, ge=1, description="Probe prompts in the batch.")
    dtypes: list[str] = Field(default_factory=list,
                              description="Reduced precisions the model is meant to run in, besides the ones it "
                                          "loads in and the harness used (float16, bfloat16): a failure fails.")
    probe_dtypes: list[str] = Field(default_factory=lambda: ["float16", "bfloat16"],
                                    description="Reduced precisions tried as well; a failure there only warns "
                                                "(the model may never run in them).")
    probe_dtype_prompts: int = Field(default=2, ge=1,
                                     description="Prompts of the batch the `probe_dtypes` are tried on (off your "
                                                 "path, a warning at most; on a CPU a reduced precision runs "
                                                 "several times slower than float32).")
    kl_threshold: float = Field(default=0.05, ge=0,
                                description="Mean KL (nats per token) from float32 beyond which a dtype fails.")
    range_fraction: float = Field(default=0.5, gt=0, le=1,
                                  description="Share of the dtype's largest finite value an activation may reach.")
    repeat_tolerance: float = Field(default=1e-4, ge=0,
                                    description="Largest logit difference between two identical forward passes.")
    attention_prompts: int = Field(default=2, ge=1,
                                   description="Prompts of the batch eager and SDPA attention are compared on: the "
                                               "most and the least padded.")
    attention_kl_threshold: float = Field(default=1e-3, ge=0,
                                          description="Mean KL, eager vs SDPA attention, beyond which they disagree.")


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def nonfinite_weights(model) -> list[dict[str, Any]]:
    import itertools

    import torch

    from ladder.backends.hf import named_weights

    found = []
    with torch.no_grad():
        for name, tensor in itertools.chain(named_weights(model), model.named_buffers()):
            if not tensor.is_floating_point() or tensor.device.type == "meta":
                continue
            # a finite sum means every value is finite (one read, no copy); else count them
            if math.isfinite(tensor.sum(dtype=torch.float64 if tensor.dtype == torch.float64 else torch.float32)):
                continue
            bad = (~torch.isfinite(tensor)).sum().item()
            if bad:
                found.append({"tensor": name, "nonfinite": int(bad), "of": int(tensor.numel())})
    return found


def forward_max_abs(model, batch) -> tuple[Any, list[float]]:
    """(float32 logits, per decoder layer the largest |value| any of its modules output)."""
    import torch

    from ladder.internals import decoder_layers, first_tensor

    _, layers = decoder_layers(model)
    maxima = [0.0] * len(layers)
    handles = []

    def make_hook(index: int):
        def hook(_module, _args, output):
            tensor = first_tensor(output)
            if tensor is not None and tensor.is_floating_point() and tensor.numel():
                low, high = torch.aminmax(tensor.detach())  # no |x| copy of a wide layer's output
                low, high = low.float().item(), high.float().item()
                top = math.nan if math.isnan(low) or math.isnan(high) else max(-low, high)
                if math.isnan(top):
                    maxima[index] = top
                elif not math.isnan(maxima[index]) and top > maxima[index]:
                    maxima[index] = top
        return hook

    for index, layer in enumerate(layers):
        for module in layer.modules():
            handles.append(module.register_forward_hook(make_hook(index)))
    try:
        with torch.no_grad():
            out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                        position_ids=batch.position_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return out.logits.float(), maxima


def batch_rows(batch, rows: list[int]):
    """These rows of a probe batch (same width and padding), for a pass on part of it."""
    from types import SimpleNamespace

    return SimpleNamespace(input_ids=batch.input_ids[rows], attention_mask=batch.attention_mask[rows],
                           position_ids=batch.position_ids[rows])


def padding_extremes(batch, count: int) -> list[int]:
    """`count` rows of the batch, the most padded and the least padded first: where attention implementations
    that mask padding differently disagree, and where they must agree anyway."""
    lengths = batch.attention_mask.sum(dim=1).tolist()
    order = sorted(range(len(lengths)), key=lambda row: lengths[row])
    picked: list[int] = []
    while order and len(picked) < count:
        picked.append(order.pop(0))
        if order and len(picked) < count:
            picked.append(order.pop())
    return sorted(picked)


def mean_kl(reference, other, mask) -> float:
    """Mean over real positions of KL(reference || other), both float32 logits."""
    import torch

    ref = torch.log_softmax(reference, dim=-1)
    oth = torch.log_softmax(other, dim=-1)
    kl = (ref.exp() * (ref - oth)).sum(-1)
    value = kl[mask.bool()].mean().item()
    return value


def run_in_dtype(model, dtype, batch):
    """Logits and per-layer maxima of `model` run in `dtype`. Widening to float32 is lossless, so the model
    is cast in place and back; a reduced precision is applied one block at a time (`cast_block_by_block`),
    so at most one decoder layer's weights exist twice: the model is never copied."""
    import torch

    own = model.dtype
    if dtype == own:
        return forward_max_abs(model, batch)
    if dtype == torch.float32:
        model.to(dtype)
        try:
            return forward_max_abs(model, batch)
        finally:
            model.to(own)
    with cast_block_by_block(model, dtype):
        return forward_max_abs(model, batch)


def casting_blocks(model) -> list[tuple[Any, bool]]:
    """(module, recurse) cast together: each decoder layer whole, and every module outside the layers that
    holds parameters or floating buffers of its own (embeddings, final norm, head, rotary tables)."""
    from ladder.internals import decoder_layers

    _, layers = decoder_layers(model)
    inside = {id(module) for layer in layers for module in layer.modules()}
    blocks = [(layer, True) for layer in layers]
    for module in model.modules():
        if id(module) in inside:
            continue
        own = list(module.parameters(recurse=False)) + [b for b in module.buffers(recurse=False)
                                                        if b.is_floating_point()]
        if any(t.is_floating_point() for t in own):
            blocks.append((module, False))
    return blocks


@contextlib.contextmanager
def cast_block_by_block(model, dtype):
    """While active, every block (`casting_blocks`) runs in `dtype`: its floating weights and buffers are
    cast just before its forward and put back right after, and the hidden state entering a decoder layer
    is cast, so activations flow in `dtype` from block to block as in a model loaded in it."""
    import torch

    def tensors(module, recurse):
        owners = module.modules() if recurse else [module]
        for owner in owners:
            for kind in ("_parameters", "_buffers"):
                for name, tensor in getattr(owner, kind).items():
                    if tensor is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                        yield owner, kind, name, tensor

    def make_hooks(module, recurse, is_layer):
        saved: list = []

        def before(_module, args, kwargs):
            for owner, kind, name, tensor in list(tensors(module, recurse)):
                if kind == "_parameters":
                    saved.append((owner, kind, name, tensor.data))
                    tensor.data = tensor.data.to(dtype)
                else:
                    saved.append((owner, kind, name, tensor))
                    owner._buffers[name] = tensor.to(dtype)
            if not is_layer:
                return None
            cast = [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() and i == 0 else a
                    for i, a in enumerate(args)]
            hidden = kwargs.get("hidden_states")
            if isinstance(hidden, torch.Tensor) and hidden.is_floating_point():
                kwargs = {**kwargs, "hidden_states": hidden.to(dtype)}
            return tuple(cast), kwargs

        def after(_module, _args, _kwargs, _output):
            while saved:
                owner, kind, name, original = saved.pop()
                if kind == "_parameters":
                    owner._parameters[name].data = original
                else:
                    owner._buffers[name] = original
            return None

        return before, after

    handles = []
    try:
        for module, recurse in casting_blocks(model):
            before, after = make_hooks(module, recurse, recurse)
            handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
            handles.append(module.register_forward_hook(after, with_kwargs=True, always_call=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def harness_modes(ctx: ProbeContext) -> dict[str, Any] | None:
    """What the tap recorded about the harness's model: dtypes and training flags (None: no recording)."""
    run = ctx.resources.peek("harness:calls")
    if run is None:
        return None
    records = run.generate_records() if hasattr(run, "generate_records") else []
    if not records:
        return None
    return {"calls": len(records),
            "dtypes": sorted({r.get("dtype") for r in records if r.get("dtype")}),
            "training_calls": sum(1 for r in records if r.get("training"))}


def dropout_settings(model) -> dict[str, float]:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    values = {}
    for key, value in config.to_dict().items():
        if "dropout" in key and isinstance(value, (int, float)) and value:
            values[key] = float(value)
    return values


def repeat_difference(model, batch, training: bool) -> float:
    """Largest logit difference between two identical forward passes of `batch` in the given mode."""
    import torch

    was_training = model.training
    model.train(training)
    try:
        with torch.no_grad():
            kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                      "position_ids": batch.position_ids, "use_cache": False}
            first = model(**kwargs).logits.float()
            second = model(**kwargs).logits.float()
    finally:
        model.train(was_training)
    mask = batch.attention_mask.bool()
    diff = (first - second).abs()[mask]
    return float(diff.max().item()) if diff.numel() else 0.0


def attention_comparison(model, batch, loaded_logits=None) -> dict[str, Any] | None:
    """Eager vs SDPA logits on the batch, when the model can switch; None when it cannot. `loaded_logits`:
    the batch's logits under the implementation the model is loaded with, already computed (on these rows
    of a bigger batch of the same width: the same values to well within the KL threshold)."""
    import torch

    config = model.config
    original = getattr(config, "_attn_implementation", None)
    if not hasattr(model, "set_attn_implementation") or original is None:
        return None
    logits = {original: loaded_logits} if loaded_logits is not None and original in ("eager", "sdpa") else {}
    try:
        for implementation in [name for name in ("eager", "sdpa") if name not in logits]:
            try:
                model.set_attn_implementation(implementation)
            except Exception as exc:  # the model does not support it: nothing to compare
                return {"skipped": f"{implementation}: {type(exc).__name__}: {exc}"}
            with torch.no_grad():
                logits[implementation] = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                               position_ids=batch.position_ids, use_cache=False).logits.float()
    finally:
        try:
            model.set_attn_implementation(original)
        except Exception as exc:  # never leave the shared model on another implementation, silently
            raise RuntimeError(f"could not restore the attention implementation {original!r} "
                               f"after comparing eager and sdpa: {type(exc).__name__}: {exc}") from exc
    mask = batch.attention_mask.bool()
    difference = float((logits["eager"] - logits["sdpa"]).abs()[mask].max().item())
    return {"kl_eager_sdpa": mean_kl(logits["eager"], logits["sdpa"], mask),
            "max_logit_difference": difference if math.isfinite(difference) else None,
            "loaded_with": original}


class Numerics(Probe):
    name = "numerics"
    needs = ("model",)
    capabilities = ("logits", "weights", "chat_template", "tokenize")
    Params = NumericsParams

    def run(self, ctx: ProbeContext):
        import torch

        from ladder.backends import model_backend
        from ladder.internals import probe_batch, prompt_strings, rounded

        params: NumericsParams = ctx.params
        hf = model_backend(ctx, "model")
        model = hf.network
        problems: list[str] = []
        warnings: list[str] = []
        notes: list[str] = []
        evidence: dict[str, Any] = {}

        ctx.progress("NaN/inf in the weights", 0.05)
        bad_weights = nonfinite_weights(model)
        evidence["nonfinite_weights"] = bad_weights[:50]
        if bad_weights:
            problems.append(f"{len(bad_weights)} weight tensors hold NaN/inf (first: {bad_weights[0]['tensor']})")

        batch = probe_batch(hf, prompt_strings(ctx.case), max_prompts=params.max_prompts)
        evidence["probe_batch"] = batch.describe()
        mask = batch.attention_mask.bool()

        own = dtype_name(model.dtype)
        stored = getattr(model.config, "dtype", None)
        modes = harness_modes(ctx)
        wanted = {own} | set(params.dtypes)
        if stored is not None:
            wanted.add(dtype_name(stored))
        if modes:
            wanted |= set(modes["dtypes"])
        wanted = {d.replace("torch.", "") for d in wanted}
        unknown = sorted(d for d in wanted if d not in REDUCED and d != "float32")
        if unknown:
            notes.append(f"dtypes not compared: {unknown}")
        reduced = sorted(d for d in wanted if d in REDUCED)
        tried = sorted(d for d in params.probe_dtypes if d in REDUCED and d not in wanted)
        evidence.update(model_dtype=own, stored_dtype=dtype_name(stored) if stored is not None else None,
                        compared_dtypes=reduced, tried_dtypes=tried)

        ctx.progress("float32 reference pass", 0.2)
        size = batch.input_ids.shape[0]
        few_rows = list(range(min(params.probe_dtype_prompts, size)))
        compared = padding_extremes(batch, params.attention_prompts)
        # the reference covers the rows compared with it: the batch where a reduced precision is on the path,
        # else the rows the tried precisions (the first ones) and the attention comparison run on
        reference_rows = list(range(size)) if reduced else sorted(set(few_rows) | set(compared))
        reference, ref_max = run_in_dtype(model, torch.float32, batch_rows(batch, reference_rows))
        evidence["float32_reference_prompts"] = len(reference_rows)
        series: dict[str, list] = {"max_abs_float32": rounded(ref_max, 3)}
        flagged: set[int] = set()
        per_dtype: dict[str, Any] = {}
        if not torch.isfinite(reference[mask[reference_rows]]).all():
            problems.append("float32 logits are not finite")
        few = batch_rows(batch, few_rows)
        for step, name in enumerate(reduced + tried):
            ctx.progress(f"{name} pass", 0.3 + 0.3 * step / max(1, len(reduced) + len(tried)))
            runs_in = name in reduced
            dtype = getattr(torch, name)
            rows, rows_mask = (batch, mask) if runs_in else (few, few.attention_mask.bool())
            logits, maxima = run_in_dtype(model, dtype, rows)
            limit = torch.finfo(dtype).max
            over = [i for i, m in enumerate(maxima) if not math.isfinite(m) or m >= params.range_fraction * limit]
            finite = bool(torch.isfinite(logits[rows_mask]).all())
            kl = mean_kl(reference[: logits.shape[0]], logits, rows_mask) if finite else float("inf")
            per_dtype[name] = {"prompts": int(logits.shape[0]),
                               "kl_from_float32": kl if math.isfinite(kl) else None, "logits_finite": finite,
                               "dtype_max": limit, "layers_near_or_over_range": over,
                               "largest_activation": max((m for m in maxima if math.isfinite(m)), default=None)}
            series[f"max_abs_{name}"] = rounded(maxima, 3)
            flagged |= set(over)
            if not finite or kl > params.kl_threshold:
                where = f" (activations reach the {name} range at layers {over})" if over else ""
                message = (f"{name} diverges from float32: KL {kl:.3g} nats/token"
                           f"{', logits not finite' if not finite else ''}{where}")
                if runs_in:
                    problems.append(message)
                else:
                    warnings.append(message + f"; the model does not run in {name} here, so only a warning")
            elif over:
                warnings.append(f"{name} activations come within {params.range_fraction:.0%} of the range at "
                                f"layers {over}")
        evidence["dtypes"] = per_dtype
        if not reduced:
            notes.append("the model runs in float32 and no reduced precision was asked for (param `dtypes`); "
                         f"{', '.join(tried) or 'none'} tried for information")

        ctx.progress("dropout and repeated passes", 0.7)
        dropout = dropout_settings(model)
        evidence["dropout_config"] = dropout
        if modes is None:
            notes.append("training mode during your harness's calls not checked: no harness ran under the tap "
                         "(give --harness or --harness-cmd)")
            training = False
        else:
            evidence["harness"] = modes
            training = modes["training_calls"] > 0
            if training:
                problems.append(f"your harness called generate with the model in training mode "
                                f"({modes['training_calls']} of {modes['calls']} calls)"
                                + (f"; dropout {dropout} is active" if dropout else ""))
        # dropout or any other randomness changes every row: two passes of a few rows tell
        difference = repeat_difference(model, few, training)
        evidence["repeat_max_logit_difference"] = difference if math.isfinite(difference) else None
        evidence["repeat_mode"] = "train" if training else "eval"
        if not math.isfinite(difference):
            notes.append(f"repeated passes not compared: the {own} logits are not finite")
        elif difference > params.repeat_tolerance:
            problems.append(f"two identical forward passes ({'train' if training else 'eval'} mode) differ by up "
                            f"to {difference:.3g} in the logits")

        ctx.progress("eager vs SDPA attention", 0.85)
        # a float32 model's reference pass is its loaded implementation's side, on the rows compared
        as_loaded = reference[[reference_rows.index(row) for row in compared]] \
            if own == "float32" and not model.training else None
        attention = attention_comparison(model, batch_rows(batch, compared), loaded_logits=as_loaded)
        if attention is None:
            notes.append("attention implementations not compared: the model cannot switch them")
        else:
            evidence["attention"] = {**attention, "prompts": [batch.texts[row] for row in compared]}
            kl = attention.get("kl_eager_sdpa")
            if kl is not None and not math.isfinite(kl):
                attention["kl_eager_sdpa"] = None
                notes.append(f"eager and SDPA not compared: the {own} logits are not finite")
            elif kl is not None and kl > params.attention_kl_threshold:
                problems.append(f"eager and SDPA attention disagree: KL {kl:.3g} nats/token")

        evidence["series"] = series
        evidence["flagged"] = sorted(flagged)
        if notes:
            evidence["notes"] = notes
        if problems:
            return failed("; ".join(problems), **evidence)
        if warnings:
            return warned("; ".join(warnings), **evidence)
        precisions = ", ".join(reduced + tried)
        checked = ["weights finite", f"{precisions} agree with float32" if precisions else None,
                   "repeated passes agree", "eager and SDPA agree" if attention and "kl_eager_sdpa" in attention
                   else None]
        return passed("; ".join(c for c in checked if c), **evidence)
