"""batch-consistency: batched generation differs from one-at-a-time generation.

What it checks:
    Greedy outputs for the probe prompts one at a time against the same prompts in
    one batch, with your harness's own batching: its `generate_batch(prompts)`
    entry point when the harness module has one, else a reproduction on the
    model with the tokenizer settings the tap recorded (padding side, pad id,
    whether an attention mask was passed). Greedy decoding must not depend on
    what else is in the batch; the first prompt whose outputs differ is shown.

    The verdict is about the path you run: outputs that change materially in your
    harness's own batches (its `generate_batch`, or a `generate` call the tap saw
    with more than one row; at least two prompts and `min_disagreement` of them,
    the bar prompt-format uses; fewer is a warn, as batched kernels flip greedy
    near-ties) fail. A harness that samples is batched greedily here with its
    own batch's padding and mask, since its outputs differ between any two runs.
    When your harness sends one prompt per call, a reproduction that changes is
    a hazard off your path: a `warn` with the reproduction as evidence, never
    the culprit.

Why it matters:
    A decoder-only model padded on the right generates after the pad tokens; a
    batch without an attention mask attends to them; pad == eos lets padding
    pass for the end of a reply. Each makes the evaluation score depend on batch
    size and order, so a sound model scores badly in a batched eval only.

Symptom:
    Scores that change with the batch size, short prompts answered worse than
    long ones, outputs that start with garbage only in batched runs.

Fix:
    Set `tokenizer.padding_side = "left"` for generation, always pass the
    attention mask, and give the tokenizer a pad token distinct from eos.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ladder.harness import HarnessProbe, HarnessRun
from ladder.probes.base import ProbeContext, failed, passed, skip, warned


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(default=16, ge=1, description="Tokens generated per prompt in the reproduction.")
    min_disagreement: float = Field(
        default=0.25, ge=0, le=1,
        description="Batching changes the outputs materially when at least this share of the prompts (and at least "
                    "two) change, as in prompt-format; fewer is a warn (batched kernels flip greedy near-ties).")


def padding_side_of(masks: list[list[int]] | None) -> str | None:
    """'left' or 'right' from where the zeros of a batch's attention mask sit."""
    for row in masks or []:
        if row and row[0] == 0:
            return "left"
        if row and row[-1] == 0:
            return "right"
    return None


def samples(records) -> bool:
    """Whether any of these generate calls sampled (their outputs differ from run to run by design)."""
    return any((record.get("effective_generation_config") or record.get("generate_kwargs") or {}).get("do_sample")
               for record in records if record)


def harness_batches(run: HarnessRun) -> bool:
    """Whether the harness itself sent several prompts in one generate call (seen by the tap)."""
    return any(len(record.get("input_ids") or record.get("input_text") or []) > 1
               for record in run.generate_records())


class BatchConsistency(HarnessProbe):
    name = "batch-consistency"
    # the reproduction on ladder's copy; the harness's own batched calls are judged without them
    optional_capabilities = ("generate", "chat_template", "tokenize")
    Params = Params

    def check(self, ctx: ProbeContext, run: HarnessRun):
        params: Params = ctx.params
        if len(run.calls) < 2:
            skip("batching needs at least two probe prompts (case key `prompts`)")
        from ladder.harness import harness_batch_call

        batch = harness_batch_call(ctx) if run.error is None else None
        if batch is not None and "error" not in batch and samples(batch.get("generate") or []):
            # sampled outputs differ between any two runs: batched greedily here, with the batch's own settings
            return self._reproduced(ctx, run, params, on_path=True, batch_record=batch["generate"][0])
        if batch is not None:
            return self._harness_batch(run, batch, params)
        return self._reproduced(ctx, run, params, on_path=harness_batches(run))

    def _harness_batch(self, run, batch, params: Params):
        from ladder.models import Finding, Status

        if "error" in batch:
            error = batch["error"]
            return Finding(status=Status.ERROR, summary=f"your harness failed, not the model: {error['message']}",
                           evidence={"harness_error": {k: v for k, v in error.items() if k != "traceback"}},
                           traceback=error.get("traceback"))
        singles = [(call.get("output") or "").strip() for call in run.calls]
        batched = [str(o).strip() for o in batch["outputs"]]
        record = batch["generate"][0] if batch.get("generate") else {}
        settings = {"padding_side": padding_side_of(record.get("attention_mask"))
                    or (record.get("tokenizer") or {}).get("padding_side"),
                    "attention_mask_passed": record.get("attention_mask") is not None,
                    "pad_token_id": (record.get("tokenizer") or {}).get("pad_token_id"),
                    "eos_token_id": (record.get("tokenizer") or {}).get("eos_token_id")}
        return self._verdict([c["prompt"] for c in run.calls], singles, batched, settings,
                             "your harness's generate_batch", min_disagreement=params.min_disagreement)

    def _reproduced(self, ctx, run, params: Params, on_path: bool, batch_record: dict | None = None):
        """Greedy, one at a time and as one batch, on ladder's copy, with the padding the harness used: the
        tokenizer state the tap saw, or a sampling harness's own batch call (`batch_record`)."""
        from ladder.backends import model_backend
        from ladder.harness.compare import sent_ids, stop_set, template_analysis

        model = model_backend(ctx)
        tokenizer = model.tokenizer
        records = [run.sent(i) for i in range(len(run.calls))]
        ids = [sent_ids(r, tokenizer, prompt=call.get("prompt")) for r, call in zip(records, run.calls)]
        if not all(ids):
            skip("the tap saw no generate() call for some prompts: give --transcript F.jsonl")
        state = (records[0].get("tokenizer") or {}) if records[0] else {}
        recorded = bool(state)
        side = state.get("padding_side") or tokenizer.padding_side
        pad = state.get("pad_token_id")
        if pad is None:
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        mask_passed = records[0].get("attention_mask") is not None
        if batch_record is not None:
            side = padding_side_of(batch_record.get("attention_mask")) or \
                (batch_record.get("tokenizer") or {}).get("padding_side") or side
            mask_passed = batch_record.get("attention_mask") is not None
        stops = stop_set(model, template_analysis(ctx, model))
        settings = {"padding_side": side, "attention_mask_passed": mask_passed, "pad_token_id": pad,
                    "eos_token_id": state.get("eos_token_id", tokenizer.eos_token_id),
                    "settings_from": "the tap (your harness's tokenizer)" if recorded else "the model's tokenizer"}

        def greedy(batch: list[list[int]]) -> list[list[int]]:
            replies = model.generate(batch, max_new_tokens=params.max_new_tokens, stop_ids=stops, padding_side=side,
                                     pad_token_id=pad, attention_mask=mask_passed)
            return [reply[:-1] if reply and reply[-1] in stops else reply for reply in replies]

        ctx.progress("generating one at a time", None)
        singles = [greedy([row])[0] for row in ids]
        ctx.progress("generating as one batch", None)
        batched = greedy(ids)
        decode = lambda rows: [tokenizer.decode(r, skip_special_tokens=True) for r in rows]  # noqa: E731
        return self._verdict([c["prompt"] for c in run.calls], decode(singles), decode(batched), settings,
                             f"a reproduction on the model (padding side {side!r}, pad id {pad}, "
                             f"attention mask {'passed' if mask_passed else 'not passed'}"
                             + ("; your harness samples, so its own outputs differ between any two runs" if
                                batch_record is not None else "") + ")",
                             same=[a == b for a, b in zip(singles, batched)], on_path=on_path,
                             min_disagreement=params.min_disagreement)

    @staticmethod
    def _verdict(prompts, singles, batched, settings, how, *, min_disagreement: float, same=None,
                 on_path: bool = True):
        from ladder.harness.compare import differs_materially

        same = same if same is not None else [a == b for a, b in zip(singles, batched)]
        differing = [i for i, ok in enumerate(same) if not ok]
        evidence = {"batched_with": how, "settings": settings, "prompts": len(prompts),
                    "differing": len(differing), "harness_batches": on_path}
        if differing:
            first = differing[0]
            evidence["side_by_side"] = {"prompt": prompts[first], "one_at_a_time": singles[first],
                                        "batched": batched[first]}
            causes = []
            if settings.get("padding_side") == "right":
                causes.append("right padding on a decoder-only model")
            if not settings.get("attention_mask_passed"):
                causes.append("no attention mask")
            if settings.get("pad_token_id") is not None and settings.get("pad_token_id") == settings.get("eos_token_id"):
                causes.append("pad == eos")
            evidence["likely_causes"] = causes
            if not on_path:
                return warned(f"{len(differing)}/{len(prompts)} greedy outputs would change if batched ({how})"
                              f"{': ' + ', '.join(causes) if causes else ''}; your harness sends one prompt per "
                              "generate call, so what it measures is not affected: a hazard for batched "
                              "evaluation, not a culprit", **evidence)
            if not differs_materially(len(differing), len(prompts), min_disagreement):
                return warned(f"{len(differing)}/{len(prompts)} outputs change when batched ({how}): fewer than a "
                              f"material difference (at least two prompts and {min_disagreement:.0%}); batched "
                              "kernels can flip a greedy near-tie", **evidence)
            return failed(f"{len(differing)}/{len(prompts)} greedy outputs change when batched "
                          f"({how}){': ' + ', '.join(causes) if causes else ''}; first: {prompts[first]!r}", **evidence)
        return passed(f"greedy outputs are identical one at a time and batched ({len(prompts)} prompts, {how})",
                      **evidence)
