"""Shared machinery of the model-internals rungs: the probe batch, the model's parts, per-layer hooks,
and a robust outlier test over per-layer series.

The hooks reduce each decoder layer's output while the forward pass runs and keep only the
previous layer's hidden state, so one pass costs memory O(layers), not O(layers x tokens x hidden)
(no `output_hidden_states=True`). Nothing here is specific to a model family: decoder layers are
found as the module list whose length is the config's layer count, the final norm and the output
head through transformers' own accessors.

Importing this module imports no torch; the functions import it when called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from ladder.backends.contract import Backend
    from ladder.case import Case

NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_norm", "norm_f", "final_layer_norm")
LAYER_LIST_NAMES = ("layers", "h", "blocks", "layer", "decoder_layers")


# ---- the probe batch ------------------------------------------------------------------------------


@dataclass
class ProbeBatch:
    """Token ids of the probe prompts, left-padded, with mask and matching position ids."""

    rows: list[list[int]]
    texts: list[str]
    templated: bool
    reply_starts: list[int] | None = None  # with answers: where each row's reply begins (its prompt's length)
    input_ids: Any = None
    attention_mask: Any = None
    position_ids: Any = None

    @property
    def tokens(self) -> int:
        return sum(len(r) for r in self.rows)

    def describe(self) -> dict[str, Any]:
        return {"prompts": len(self.rows), "tokens": self.tokens,
                "format": "chat template" if self.templated else "plain text (no chat template)"}


def prompt_strings(case: "Case") -> list[str]:
    """The case's own prompts, else ladder's default ones."""
    from ladder.harness import probe_prompts

    return [p["prompt"] for p in probe_prompts(case)]


def probe_texts(ctx, max_prompts: int) -> tuple[list[str], list[str] | None]:
    """(prompts, reference answers or None): single-turn conversations of `--eval-data`, else `--data`,
    when the case gives them (text the model should predict well); else the default prompts with their
    reference replies when the case gives no prompts; else the case's prompts alone."""
    source = ctx.case.eval_data or ctx.case.data
    if source:
        from ladder.probes.memorization import conversation_rows

        try:
            pairs = conversation_rows(source, max_prompts)
        except Exception:  # unreadable data is the data rungs' finding; fall back to the prompts
            pairs = []
        if pairs:
            return [p for p, _ in pairs], [a for _, a in pairs]
    if not ctx.case.prompts:
        from ladder.harness import DEFAULT_ANSWERS

        prompts = prompt_strings(ctx.case)[:max_prompts]  # the default prompts, the case giving none
        return prompts, [DEFAULT_ANSWERS[prompt] for prompt in prompts]
    return prompt_strings(ctx.case), None


def probe_batch(hf: "Backend", prompts: list[str], *, max_prompts: int = 8,
                answers: list[str] | None = None) -> ProbeBatch:
    """The prompts through the model's own chat template (plain text when it has none), as one batch.

    With `answers`, each prompt's assistant turn is included, so next-token losses cover a reply.
    """
    prompts = list(prompts)[:max_prompts]
    templated = hf.has_chat_template()
    rows, texts, starts = [], [], []
    for index, prompt in enumerate(prompts):
        answer = answers[index] if answers and index < len(answers) else None
        if templated:
            messages = [{"role": "user", "content": prompt}]
            if answer is not None:
                messages.append({"role": "assistant", "content": answer})
            ids = hf.render(messages, add_generation_prompt=answer is None)
            start = len(hf.render(messages[:1], add_generation_prompt=True))
        else:
            text = prompt if answer is None else f"{prompt}\n{answer}"
            ids = hf.tokenize(text)
            start = len(hf.tokenize(f"{prompt}\n"))
        rows.append(ids)
        texts.append(prompt)
        starts.append(min(start, len(ids)) if answer is not None else len(ids))
    batch = ProbeBatch(rows=rows, texts=texts, templated=templated, reply_starts=starts if answers else None)
    return to_tensors(hf, batch)


def to_tensors(hf: "Backend", batch: ProbeBatch) -> ProbeBatch:
    input_ids, mask, _ = hf.padded(batch.rows)
    batch.input_ids, batch.attention_mask = input_ids, mask
    batch.position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return batch


# ---- the model's parts ----------------------------------------------------------------------------


def layer_count(model) -> int | None:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return getattr(config, "num_hidden_layers", None)


def decoder_layers(model) -> tuple[str, list]:
    """(dotted name, layers) of the decoder's layer list: the ModuleList as long as the config says."""
    import torch

    expected = layer_count(model)
    candidates = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            last = name.rsplit(".", 1)[-1]
            candidates.append((len(module) == expected, last in LAYER_LIST_NAMES, len(module), name, module))
    if not candidates:
        raise ValueError("the model has no list of decoder layers that ladder can hook")
    candidates.sort(key=lambda c: (c[0], c[1], c[2]), reverse=True)
    _, _, _, name, module = candidates[0]
    return name, list(module)


MLP_NAMES = ("mlp", "feed_forward", "ffn")  # a decoder layer's position-wise block


def slice_position_wise(model, limit: Callable[[], int | None]) -> None:
    """From now on each decoder layer's MLP runs on at most `limit()` tokens at a time (None: all at once), the
    slices' outputs joined along the sequence. An MLP is position-wise (a token's output depends on that token
    alone), so the values are the same; what changes is its transient activations, which for an outsized MLP
    (a widened intermediate) are the biggest allocation of a probe batch's forward pass. Installed once per
    module as a method bound to it (a deep copy of the model computes with its own weights); the module's own
    `forward` is kept (accelerate's hooks stay); an MLP returning more than a tensor (a mixture of experts with
    its router logits) runs whole."""
    import types

    import torch

    _, layers = decoder_layers(model)
    for layer in layers:
        mlp = next((getattr(layer, name) for name in MLP_NAMES
                    if isinstance(getattr(layer, name, None), torch.nn.Module)), None)
        if mlp is None or "_ladder_whole_forward" in mlp.__dict__:
            continue
        mlp.__dict__["_ladder_whole_forward"] = mlp.__dict__.get("forward")
        mlp.__dict__["_ladder_slice_limit"] = limit
        mlp.forward = types.MethodType(_sliced_forward, mlp)


def _sliced_forward(module, hidden, *args, **kwargs):
    import torch

    own = module.__dict__.get("_ladder_whole_forward")
    whole = own if own is not None else type(module).forward.__get__(module)
    tokens = module.__dict__["_ladder_slice_limit"]()
    if tokens is None or not isinstance(hidden, torch.Tensor) or hidden.dim() != 3 \
            or hidden.shape[0] * hidden.shape[1] <= tokens:
        return whole(hidden, *args, **kwargs)
    step = max(1, tokens // hidden.shape[0])
    first = whole(hidden[:, :step], *args, **kwargs)
    if not isinstance(first, torch.Tensor):
        return whole(hidden, *args, **kwargs)
    rest = [whole(hidden[:, start:start + step], *args, **kwargs) for start in range(step, hidden.shape[1], step)]
    return torch.cat([first, *rest], dim=1)


def final_norm(model):
    """The norm applied after the last decoder layer (None when the model has none)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    for owner in (decoder, getattr(model, "model", None), model):
        if owner is None:
            continue
        for name in NORM_NAMES:
            module = getattr(owner, name, None)
            if module is not None and hasattr(module, "forward"):
                return module
    return None


def attention_module(layer):
    """A decoder layer's self-attention module (the first child whose name says attention)."""
    for name in ("self_attn", "attn", "attention", "self_attention"):
        module = getattr(layer, name, None)
        if module is not None:
            return module
    for name, module in layer.named_children():
        if "attn" in name or "attention" in name:
            return module
    return None


def first_tensor(output):
    """The hidden state in a layer's output (a tensor, or the first element of a tuple)."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return getattr(output, "last_hidden_state", None)


# ---- one forward pass with per-layer reductions -----------------------------------------------------


@dataclass
class LayerSeries:
    """What the hooks kept: per-layer floats, keyed by series name."""

    series: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.series.setdefault(name, []).append(float(value))


def forward_with_layer_hooks(model, batch: ProbeBatch,
                             on_layer: Callable[[int, Any, Any], None],
                             on_embeddings: Callable[[Any], None] | None = None,
                             extra_kwargs: dict[str, Any] | None = None):
    """One forward pass of `batch`; `on_layer(index, hidden, previous_hidden)` after each decoder layer.

    Only the previous layer's hidden state is kept between hooks. Returns the model's output.
    """
    import torch

    _, layers = decoder_layers(model)
    state: dict[str, Any] = {"previous": None}
    handles = []

    def pre_first(_module, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        if hidden is not None:
            state["previous"] = hidden.detach()
            if on_embeddings is not None:
                on_embeddings(state["previous"])

    def make_hook(index: int):
        def hook(_module, _args, output):
            hidden = first_tensor(output)
            if hidden is None:
                return
            hidden = hidden.detach()
            on_layer(index, hidden, state["previous"])
            state["previous"] = hidden
        return hook

    handles.append(layers[0].register_forward_pre_hook(pre_first, with_kwargs=True))
    for index, layer in enumerate(layers):
        handles.append(layer.register_forward_hook(make_hook(index)))
    kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
              "position_ids": batch.position_ids, "use_cache": False}
    kwargs.update(extra_kwargs or {})
    try:
        with torch.no_grad():
            return model(**kwargs)
    finally:
        for handle in handles:
            handle.remove()
        state.clear()


def token_mask(batch: ProbeBatch, skip_first: bool = True):
    """Boolean (batch, seq) mask of real tokens; without each row's first token when `skip_first`
    (the first position often carries an attention-sink norm unlike any other)."""
    mask = batch.attention_mask.bool()
    if skip_first:
        first = mask.long().argmax(dim=-1)
        mask = mask.clone()
        mask[range(mask.shape[0]), first] = False
    return mask


def next_token_targets(batch: ProbeBatch):
    """(positions mask, target ids): position t predicts token t+1 where both are real tokens."""
    mask = batch.attention_mask.bool()
    valid = mask[:, :-1] & mask[:, 1:]
    return valid, batch.input_ids[:, 1:]


def reply_targets(batch: ProbeBatch):
    """Like `next_token_targets`, but only the positions that predict a reply token (the whole row when the
    batch has no replies): what a chat model is trained to predict, where damage to it shows."""
    valid, targets = next_token_targets(batch)
    if not batch.reply_starts:
        return valid, targets
    width = batch.input_ids.shape[1]
    keep = valid.clone()
    keep[:] = False
    for row, (ids, start) in enumerate(zip(batch.rows, batch.reply_starts)):
        offset = width - len(ids)  # left padding
        keep[row, offset + start - 1: width - 1] = True
    return keep & valid, targets


def lens_loss(hidden, norm, head, valid, targets) -> float:
    """Mean next-token cross-entropy of `head(norm(hidden))` over the valid positions (float32)."""
    import torch

    states = hidden[:, :-1][valid]
    wanted = targets[valid]
    if states.numel() == 0:
        return float("nan")
    total, chunk = 0.0, 512  # positions per chunk: the vocabulary-wide logits stay small
    for start in range(0, states.shape[0], chunk):
        part = states[start:start + chunk]
        normed = norm(part) if norm is not None else part
        logits = head(normed).float()
        total += float(torch.nn.functional.cross_entropy(logits, wanted[start:start + chunk], reduction="sum"))
    return total / states.shape[0]


# ---- robust statistics ------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return float("nan")
    mid = n // 2
    return ordered[mid] if n % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def robust_z(values: list[float], floor: float = 0.0) -> list[float]:
    """(x - median) / (1.4826 * MAD), the MAD floored at `floor` so flat series do not explode."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return [0.0 for _ in values]
    centre = median(finite)
    mad = median([abs(v - centre) for v in finite]) * 1.4826
    scale = max(mad, floor, 1e-12)
    return [(v - centre) / scale if math.isfinite(v) else float("inf") for v in values]


def outliers(values: list[float], threshold: float, *, floor: float = 0.0, skip: Iterable[int] = (),
             direction: str = "both") -> list[int]:
    """Indices whose robust z-score is beyond `threshold` (`direction`: both, high or low)."""
    skipped = set(skip)
    kept = [v for i, v in enumerate(values) if i not in skipped]
    if len(kept) < 3:
        return []
    scores = robust_z(kept, floor)
    flagged, k = [], 0
    for i in range(len(values)):
        if i in skipped:
            continue
        z = scores[k]
        k += 1
        if (direction in ("both", "high") and z > threshold) or (direction in ("both", "low") and z < -threshold):
            flagged.append(i)
    return flagged


def rounded(values: Iterable[float], digits: int = 5) -> list[float | None]:
    """A series as JSON-friendly floats; a non-finite value (NaN, inf) becomes None."""
    return [round(float(v), digits) if math.isfinite(float(v)) else None for v in values]
