"""Rung `degeneration`: with the correct format the model still loops or collapses (exposure bias).

What it checks:
    Free-running greedy generations of the probe prompts through the model's own chat template
    (the format `prompt-format` verifies; the rung says whether that rung passed): per generation
    the repetition rate (share of repeated n-grams), distinct-1/2 over all replies, whether it
    ends in a loop (a cycle of tokens repeated to the length limit) and whether it stopped; per
    step the mean next-token entropy (a collapse to near zero mid-reply shows as a falling series).
    Where reference answers are given (rows of `--eval-data`, else `--data`, with a prompt and an
    assistant reply) the loss of the reference tokens teacher-forced against the same tokens'
    loss after the model's own free-running prefix: the exposure-bias gap. With `--base`, when
    the model loops or repeats, the base model's figures on the same prompts (does it too?).

Why it matters:
    A model that loops or collapses under the right format has a real behaviour fault (exposure
    bias, a fine-tune that never learned to stop, repetition learned from the data); one that
    only loops under the wrong format does not, and this rung is reached only after the format
    is verified.

Symptom:
    Replies that repeat a phrase until the token limit, never emit the end-of-turn token, or
    drift into one token; fine in teacher-forced evaluation, bad in free generation.

Fix:
    Make sure every training reply ends with the end-of-turn/EOS token and that it is not masked;
    deduplicate repetitive training replies; train longer on full replies or with scheduled
    sampling; at inference, a mild repetition penalty hides but does not cure it.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ladder.probes.base import Probe, ProbeContext, failed, passed, warned


class DegenerationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_prompts: int = Field(default=8, ge=1, description="Probe prompts generated from.")
    max_new_tokens: int = Field(default=48, ge=8, description="Tokens generated per prompt.")
    ngram: int = Field(default=3, ge=1, description="n of the repeated n-gram share.")
    loop_share: float = Field(default=0.5, ge=0, le=1,
                              description="Share of looping generations beyond which the rung fails.")
    max_repetition: float = Field(default=0.5, ge=0, le=1,
                                  description="Mean share of repeated n-grams in replies beyond which the rung fails.")
    min_loop_tokens: int = Field(default=12, ge=4,
                                 description="A loop must cover at least this many trailing tokens.")
    gap_threshold: float = Field(default=1.0, ge=0,
                                 description="Free-running minus teacher-forced loss (nats/token) that warns.")
    references: int = Field(default=16, ge=0, description="Reference answers used for the exposure-bias gap.")


def repeated_share(tokens: list[int], n: int) -> float:
    """Share of n-grams that already occurred earlier in the sequence."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def distinct(tokens_list: list[list[int]], n: int) -> float:
    grams = [tuple(t[i:i + n]) for t in tokens_list for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def trailing_loop(tokens: list[int], min_tokens: int, max_period: int = 16) -> dict[str, int] | None:
    """The shortest period p such that the last >= min_tokens tokens repeat with period p."""
    for period in range(1, max_period + 1):
        length = 0
        for i in range(len(tokens) - 1, period - 1, -1):
            if tokens[i] != tokens[i - period]:
                break
            length += 1
        covered = length + period
        if covered >= min_tokens and covered >= 2 * period:
            return {"period": period, "tokens": covered}
    return None


def generate_with_entropy(hf, prompts_ids: list[list[int]], max_new_tokens: int):
    """Greedy generations (new ids, cut after a stop id), whether each stopped, and the per-step mean entropy
    over live rows: read off the run's earlier generations when they cover every prompt (the template path's
    replies are these prompts' greedy replies), else generated."""
    stops = hf.stop_ids()
    known = [hf.remembered_greedy(prompt, max_new_tokens=max_new_tokens, stop_ids=stops) for prompt in prompts_ids]
    if known and all(known):
        replies = [reply for reply, _ in known]
        return replies, [bool(reply) and reply[-1] in stops for reply in replies], \
            mean_over_live_rows([row for _, row in known])
    replies, stopped, step_logits = free_run(hf, prompts_ids, max_new_tokens)
    return replies, stopped, step_entropy(replies, step_logits)


def free_run(hf, prompts_ids: list[list[int]], max_new_tokens: int):
    """Greedy generations (new ids, cut after a stop id), whether each stopped, and per step the logits
    (batch x vocabulary) the model produced after its own prefix."""
    import torch

    from ladder.backends.hf import PURE_GREEDY, cut_at_stop, token_progress

    input_ids, mask, pad = hf.padded(prompts_ids)
    stops = hf.stop_ids()
    with torch.no_grad():
        out = hf.network.generate(input_ids=input_ids, attention_mask=mask, **PURE_GREEDY,
                                  max_new_tokens=max_new_tokens, pad_token_id=pad,
                                  eos_token_id=sorted(stops) or None, output_logits=True,
                                  return_dict_in_generate=True,
                                  stopping_criteria=token_progress(max_new_tokens),
                                  **hf.prefill_options(input_ids))
    new = out.sequences[:, input_ids.shape[1]:].tolist()
    replies, stopped = [], []
    for row in new:
        kept = cut_at_stop(row, stops)
        replies.append(kept)
        stopped.append(bool(kept) and kept[-1] in stops)
    return replies, stopped, out.logits


def step_entropy(replies: list[list[int]], step_logits) -> list[float]:
    """Per generation step, the mean next-token entropy over the rows still generating."""
    import torch

    per_row: list[list[float]] = [[] for _ in replies]
    for step, logits in enumerate(step_logits):
        live = [r for r, reply in enumerate(replies) if len(reply) > step]
        if not live:
            break
        logp = torch.log_softmax(logits[live].float(), dim=-1)
        for row, value in zip(live, (-(logp.exp() * logp).sum(-1)).tolist()):
            per_row[row].append(value)
    return mean_over_live_rows(per_row)


def mean_over_live_rows(per_row: list[list[float]]) -> list[float]:
    """Per step, the mean of the rows' values at that step over the rows that reach it."""
    means = []
    for step in range(max((len(row) for row in per_row), default=0)):
        live = [row[step] for row in per_row if len(row) > step]
        means.append(sum(live) / len(live))
    return means


def reference_pairs(ctx: ProbeContext, hf, limit: int) -> tuple[list[tuple[list[int], list[int]]], str | None]:
    """(prompt ids through the template, reference answer ids) from the case's data rows, and the source."""
    if limit == 0:
        return [], None
    source = ctx.case.eval_data or ctx.case.data
    if not source:
        return [], None
    from ladder.probes.memorization import conversation_rows

    pairs = []
    for prompt, answer in conversation_rows(source, limit):
        prompt_ids = hf.render([{"role": "user", "content": prompt}]) if hf.has_chat_template() \
            else hf.tokenize(prompt)
        answer_ids = hf.tokenize(answer, add_special_tokens=False)
        if answer_ids:
            pairs.append((prompt_ids, answer_ids))
    return pairs, source


def exposure_gap(hf, pairs) -> dict[str, float]:
    """Mean NLL of reference tokens teacher-forced vs after the model's own greedy prefix. Up to the first
    reference token that is not the model's greedy choice the two prefixes are the same tokens, so those steps
    are the teacher-forced pass's (`greedy_agreement`); only a reference that leaves the greedy path before its
    last token is run on, from that point, and read off the free-running generation's own logits."""
    import torch

    teacher, hits = hf.greedy_agreement(pairs)
    stops = hf.stop_ids()
    free: list[float] = []
    diverging = []  # (row, first miss): the free run continues from prompt + the reference's greedy start
    for row, ((_, answer), values, row_hits) in enumerate(zip(pairs, teacher, hits)):
        miss = next((i for i, hit in enumerate(row_hits) if not hit), len(answer))
        stop = next((i for i, token in enumerate(answer[:miss]) if token in stops), None)
        if stop is not None:  # the greedy run itself stops inside the shared start
            free.extend(-v for v in values[:stop + 1])
        elif miss >= len(answer) - 1:  # the steps that differ would come after the reference ends
            free.extend(-v for v in values)
        else:
            free.extend(-v for v in values[:miss + 1])
            diverging.append((row, miss))
    if diverging:
        starts = [pairs[row][0] + pairs[row][1][:miss] for row, miss in diverging]
        own, _, step_logits = free_run(hf, starts, max(len(pairs[row][1]) - miss for row, miss in diverging))
        for index, ((row, miss), generated) in enumerate(zip(diverging, own)):
            answer = pairs[row][1]
            for step in range(1, min(len(answer) - miss, len(generated))):  # step 0 is the miss itself
                logprobs = torch.log_softmax(step_logits[step][index].float(), dim=-1)
                free.append(-float(logprobs[answer[miss + step]]))
    teacher_values = [-v for row in teacher for v in row]
    tf = sum(teacher_values) / len(teacher_values) if teacher_values else float("nan")
    fr = sum(free) / len(free) if free else float("nan")
    return {"teacher_forced_loss": tf, "free_running_loss": fr, "gap": fr - tf}


def measure(hf, prompts: list[str], params: DegenerationParams) -> dict[str, Any]:
    from ladder.internals import probe_batch

    batch = probe_batch(hf, prompts, max_prompts=params.max_prompts)
    replies, stopped, entropy = generate_with_entropy(hf, batch.rows, params.max_new_tokens)
    stops = hf.stop_ids()
    # a reply that loops and then stops still looped: look at it without its final stop id
    loops = [trailing_loop(r[:-1] if r and r[-1] in stops else r, params.min_loop_tokens) for r in replies]
    repetition = [repeated_share(r, params.ngram) for r in replies]
    return {
        "replies": replies, "stopped": stopped, "entropy": entropy, "loops": loops,
        "repetition": repetition, "distinct_1": distinct(replies, 1), "distinct_2": distinct(replies, 2),
        "loop_share": sum(1 for loop in loops if loop) / len(loops) if loops else 0.0,
        "stop_rate": sum(stopped) / len(stopped) if stopped else 0.0,
        "mean_repetition": sum(repetition) / len(repetition) if repetition else 0.0,
        "format": batch.describe()["format"], "texts": batch.texts,
    }


def figures(m: dict[str, Any]) -> dict[str, Any]:
    return {"loop_share": round(m["loop_share"], 4), "stop_rate": round(m["stop_rate"], 4),
            "mean_repetition": round(m["mean_repetition"], 4), "distinct_1": round(m["distinct_1"], 4),
            "distinct_2": round(m["distinct_2"], 4),
            "mean_entropy": round(sum(m["entropy"]) / len(m["entropy"]), 4) if m["entropy"] else None}


class Degeneration(Probe):
    name = "degeneration"
    needs = ("model",)
    capabilities = ("generate", "logits", "chat_template", "tokenize")
    Params = DegenerationParams

    def run(self, ctx: ProbeContext):
        from ladder.backends import model_backend
        from ladder.internals import prompt_strings, rounded

        params: DegenerationParams = ctx.params
        hf = model_backend(ctx, "model")
        prompts = prompt_strings(ctx.case)
        ctx.progress("free-running generations", 0.1)
        m = measure(hf, prompts, params)
        format_finding = ctx.finding_of("prompt-format")
        samples = [{"prompt": text, "reply": hf.detokenize(reply), "stopped": stop,
                    "loop": loop, "repeated_ngram_share": round(rep, 3)}
                   for text, reply, stop, loop, rep in zip(m["texts"], m["replies"], m["stopped"], m["loops"],
                                                           m["repetition"])]
        evidence: dict[str, Any] = {
            "format": m["format"],
            "prompt_format_rung": format_finding.status.value if format_finding else "not run in this walk",
            "figures": figures(m), "samples": samples[:8],
            "series": {"entropy": rounded(m["entropy"], 4)},
            "flagged": sorted({len(r) - loop["tokens"] for r, loop in zip(m["replies"], m["loops"]) if loop}),
            "series_index": "generation step (flagged: steps where a loop begins)",
        }
        gap = None
        pairs, source = reference_pairs(ctx, hf, params.references)
        if pairs:
            ctx.progress("teacher-forced vs free-running loss", 0.5)
            gap = exposure_gap(hf, pairs)
            evidence["exposure_bias"] = {k: round(v, 4) for k, v in gap.items()} | {"references": len(pairs),
                                                                                   "source": source}
        else:
            evidence["exposure_bias"] = "not measured: no reference answers (give --eval-data or --data with " \
                                        "prompt/answer rows)"
        share = m["loop_share"]
        base_figures = None
        if ctx.case.base and (share > params.loop_share or m["mean_repetition"] > params.max_repetition):
            # only a failure needs the base's figures (does it loop as well?): a healthy reply needs no control
            ctx.progress("the base model's generations", 0.8)
            base = model_backend(ctx, "base")
            base_m = measure(base, prompts, params)
            base_figures = figures(base_m)
            evidence["base_figures"] = base_figures
            evidence["series"]["base_entropy"] = rounded(base_m["entropy"], 4)
        elif ctx.case.base:
            evidence["base_figures"] = "not measured: the model's own replies neither loop nor repeat"

        if share > params.loop_share:
            inherited = base_figures is not None and base_figures["loop_share"] > params.loop_share
            return failed(f"{share:.0%} of free-running replies end in a loop under the model's own chat template "
                          f"(stop rate {m['stop_rate']:.0%}, distinct-2 {m['distinct_2']:.2f})"
                          + ("; the base loops as well" if inherited else ""), **evidence)
        if m["mean_repetition"] > params.max_repetition:
            return failed(f"free-running replies repeat themselves: {m['mean_repetition']:.0%} of their "
                          f"{params.ngram}-grams are repeats under the model's own chat template (distinct-2 "
                          f"{m['distinct_2']:.2f}, stop rate {m['stop_rate']:.0%})", **evidence)
        warnings = []
        if gap is not None and math.isfinite(gap["gap"]) and gap["gap"] > params.gap_threshold:
            warnings.append(f"free-running loss exceeds teacher-forced by {gap['gap']:.2f} nats/token "
                            "(exposure bias)")
        if share > 0:
            warnings.append(f"{share:.0%} of replies end in a loop")
        if warnings:
            return warned("; ".join(warnings), **evidence)
        return passed(f"no loops in {len(m['replies'])} free-running replies (stop rate {m['stop_rate']:.0%}, "
                      f"repeated {params.ngram}-gram share {m['mean_repetition']:.2f}, distinct-2 "
                      f"{m['distinct_2']:.2f})", **evidence)
