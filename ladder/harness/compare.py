"""Shared by the interface rungs: what the harness sent, in ids; the model's template; two paths measured.

A "path" is a list of prompt id lists. `measure_path` runs ladder's own greedy
generation on it (the run's shared model, batched, left-padded, stopping on the
model's eos ids and the template's end-of-turn token) and scores the replies:
accuracy against the case's expected answers, the rate of stopping on the
end-of-turn token, distinct-2, and the mean log-probability of the reply tokens.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ladder.templates import TemplateAnalysis, TemplateError, analyse, renderer_for_tokenizer

if TYPE_CHECKING:
    from ladder.backends.contract import Backend
    from ladder.harness.run import HarnessRun
    from ladder.probes.base import ProbeContext


def prompt_row(record: dict[str, Any] | None, tokenizer, prompt: str | None) -> int:
    """The row of a generate call that carries `prompt`: a batched harness (lm-eval, a pipeline with
    batch_size) sends several prompts in one call, sorted its own way, so row 0 is rarely the one asked.
    The row whose decoded text ends closest to the prompt's last occurrence wins; row 0 when none holds it."""
    if not record or not prompt:
        return 0
    rows = record.get("input_ids") or []
    texts = record.get("input_text") or []
    count = max(len(rows), len(texts))
    if count < 2:
        return 0
    wanted = prompt.strip()
    best, best_tail = 0, None
    for row in range(count):
        if rows:
            ids = sent_ids(record, tokenizer, row)
            text = tokenizer.decode(ids or [], skip_special_tokens=False)
        else:
            text = texts[row]
        at = text.rfind(wanted)
        if at >= 0:
            tail = len(text) - (at + len(wanted))  # the template's tail after the prompt is the same in every row
            if best_tail is None or tail < best_tail:
                best, best_tail = row, tail
    return best


def output_ids(record: dict[str, Any] | None, tokenizer, prompt: str | None) -> list[int] | None:
    """The generated ids of the row of a generate call that carries `prompt` (see `prompt_row`)."""
    outputs = (record or {}).get("output_ids")
    if not outputs:
        return None
    return list(outputs[min(prompt_row(record, tokenizer, prompt), len(outputs) - 1)])


def runs_past_end_of_turn(run, tokenizer, eot: int) -> dict[str, Any]:
    """Where the harness's generate calls ran on after the end-of-turn token `eot` (when it is not a stop id),
    and whether what followed it reached the reply the harness returned: a harness that stops on the marker's
    text (`stop_strings`) or cuts its replies there gets the same replies, only slower. `changes_replies`: it
    did on some prompt, or no generated ids were recorded to tell (the missing stop id is then the finding)."""
    prompts, ran_past, into_replies, example = 0, 0, 0, None
    for index, call in enumerate(run.calls):
        output = output_ids(run.sent(index), tokenizer, call.get("prompt"))
        if output is None:
            continue
        prompts += 1
        if eot not in output[:-1]:
            continue
        ran_past += 1
        after = tokenizer.decode(output[output.index(eot) + 1:], skip_special_tokens=True).strip()
        reply = call.get("output")
        if after and (reply is None or after[:16] in reply):
            into_replies += 1
            example = example or after[:80]
    return {"prompts": prompts, "ran_past": ran_past, "into_replies": into_replies, "example": example,
            "changes_replies": bool(into_replies) or not prompts}


def sent_ids(record: dict[str, Any] | None, tokenizer, row: int = 0, prompt: str | None = None) -> list[int] | None:
    """The ids of one row of a generate call, without padding (by its attention mask): the row that carries
    `prompt` when it is given (see `prompt_row`), else `row`.

    A transcript may give only text: it is tokenized as it stands (no special tokens
    added), since it is meant to be exactly what was sent. A prompt posted to a server's
    `/completions` is tokenized as servers do (with the tokenizer's special tokens); messages
    posted to `/chat/completions` are rendered by the checkpoint's own chat template, which
    is what the server applies when it serves this checkpoint as it ships.
    """
    if record is None:
        return None
    if prompt is not None:
        row = prompt_row(record, tokenizer, prompt)
    rows = record.get("input_ids")
    if rows:
        ids = rows[row]
        masks = record.get("attention_mask")
        if masks:
            ids = [token for token, keep in zip(ids, masks[row]) if keep]
        return list(ids)
    texts = record.get("input_text")
    if texts:
        special = bool(record.get("tokenize_with_special_tokens"))
        return list(tokenizer(texts[min(row, len(texts) - 1)], add_special_tokens=special)["input_ids"])
    messages = record.get("messages")
    if messages and getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
    return None


def template_analysis(ctx: "ProbeContext", model: "Backend") -> TemplateAnalysis | None:
    """The model's chat template, analysed once per run (None when it has none)."""
    if not model.has_chat_template():
        return None

    def build() -> TemplateAnalysis | None:
        try:
            return analyse(renderer_for_tokenizer(model.tokenizer))
        except TemplateError:
            return None

    return ctx.resources.get("template:model", build)


def end_of_turn_id(tokenizer, analysis: TemplateAnalysis | None) -> int | None:
    """The single token the template closes an assistant turn with; else the tokenizer's eos."""
    if analysis is not None and analysis.end_of_turn:
        ids = tokenizer(analysis.end_of_turn, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            return ids[0]
    return tokenizer.eos_token_id


def stop_set(model: "Backend", analysis: TemplateAnalysis | None) -> set[int]:
    stops = set(model.stop_ids())
    eot = end_of_turn_id(model.tokenizer, analysis)
    if eot is not None:
        stops.add(eot)
    if model.tokenizer.eos_token_id is not None:
        stops.add(model.tokenizer.eos_token_id)
    return stops


def generate_cut(model: "Backend", prompts: list[list[int]], stops: set[int], max_new_tokens: int,
                 batch_size: int = 16) -> list[list[int]]:
    """Greedy replies (batched), each cut after its first stop id; shared between rungs (`greedy_replies`)."""
    replies: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        replies.extend(model.greedy_replies(chunk, max_new_tokens=max_new_tokens, stop_ids=stops))
    return replies


def distinct_2(ids: list[int]) -> float:
    pairs = list(zip(ids, ids[1:]))
    return len(set(pairs)) / len(pairs) if pairs else 1.0


def measure_path(model: "Backend", prompts: list[list[int]], expects: list[str | None], *, stops: set[int],
                 end_of_turn: int | None, max_new_tokens: int) -> dict[str, Any]:
    """Replies and metrics of one path (see the module docstring)."""
    replies = generate_cut(model, prompts, stops, max_new_tokens)
    texts = [model.detokenize([t for t in reply if t not in stops], skip_special_tokens=True) for reply in replies]
    scored = [(p, r) for p, r in zip(prompts, replies) if r]
    logprobs = model.score(scored) if scored else []
    flat = [value for row in logprobs for value in row]
    checked = [(text, expect) for text, expect in zip(texts, expects) if expect]
    correct = [re.search(expect, text) is not None for text, expect in checked]
    eot_target = {end_of_turn} if end_of_turn is not None else stops
    return {
        "replies": texts,
        "reply_ids": replies,
        "correct": [None if not e else re.search(e, t) is not None for t, e in zip(texts, expects)],
        "metrics": {
            "accuracy": round(sum(correct) / len(correct), 3) if correct else None,
            "end_of_turn_stop_rate": round(sum(1 for r in replies if r and r[-1] in eot_target) / len(replies), 3)
            if replies else None,
            "ran_to_max_new_tokens": round(sum(1 for r in replies if len(r) >= max_new_tokens
                                               and r[-1] not in stops) / len(replies), 3) if replies else None,
            "distinct_2": round(sum(distinct_2([t for t in r if t not in stops]) for r in replies) / len(replies), 3)
            if replies else None,
            "mean_logprob": round(sum(flat) / len(flat), 3) if flat else None,
        },
    }


def metrics_table(harness: dict[str, Any], template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{metric: {harness: x, template: y}} for the metrics measured on both paths."""
    table = {}
    for name, value in template["metrics"].items():
        other = harness["metrics"].get(name)
        if value is not None or other is not None:
            table[name] = {"harness": other, "template": value}
    return table


def harness_prompts(run: "HarnessRun", prompts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per call of the run: the user's prompt and expectation (the case's, when the run used them)."""
    by_text = {p["prompt"]: p.get("expect") for p in prompts}
    return [{"prompt": call.get("prompt"), "expect": by_text.get(call.get("prompt"))} for call in run.calls]


def template_replies(ctx: "ProbeContext", model: "Backend", analysis: TemplateAnalysis | None,
                     prompts: list[str], max_new_tokens: int) -> list[list[int]]:
    """Greedy replies through the template (ladder's correct path), cut at the stop ids; shared per run."""
    key = f"template:replies:{max_new_tokens}:{hash(tuple(prompts))}"
    return ctx.resources.get(key, lambda: generate_through_template(model, analysis, prompts, max_new_tokens))


def generate_through_template(model: "Backend", analysis: TemplateAnalysis | None, prompts: list[str],
                              max_new_tokens: int) -> list[list[int]]:
    """`template_replies` computed now, not shared (for a model in a temporary state, e.g. layers bypassed)."""
    ids = [model.render([{"role": "user", "content": p}]) if analysis is not None
           else model.tokenize(p) for p in prompts]
    return generate_cut(model, ids, stop_set(model, analysis), max_new_tokens)


def as_id_list(value: Any) -> list[int]:
    """eos_token_id as generate takes it (int, list or None) as a list."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value if isinstance(v, int)]
    return [int(value)] if isinstance(value, int) else []


# ---- do two paths give the same replies? ----------------------------------------------------------

AGREEING_WORDS = 4  # replies that start with the same words agree: same answer, other continuation


def normalised_words(text: str | None) -> list[str]:
    """A reply's words, case-folded, punctuation at word ends dropped (what a reader compares)."""
    words = [w.strip(".,;:!?\"'()[]{}`*") for w in (text or "").casefold().split()]
    return [w for w in words if w]


def replies_agree(a: str | None, b: str | None) -> bool:
    """Same reply, or the same first AGREEING_WORDS words (an empty reply agrees only with another)."""
    left, right = normalised_words(a), normalised_words(b)
    if not left or not right:
        return not left and not right
    n = min(AGREEING_WORDS, len(left), len(right))
    return left[:n] == right[:n]


def differs_materially(differing: int, prompts: int, min_rate: float) -> bool:
    """Two paths differ materially (docs/verdicts.md): at least two prompts (all of them when fewer) and at
    least `min_rate` of them get a different reply (see `disagreement`) or, as well, behave differently."""
    return differing >= min(2, prompts) > 0 and round(differing / prompts, 3) >= min_rate


def disagreement(harness_replies: list[str], template_replies: list[str]) -> dict[str, Any]:
    """How many prompts get a different reply on the two paths (see `replies_agree`)."""
    differing = [i for i, (h, t) in enumerate(zip(harness_replies, template_replies)) if not replies_agree(h, t)]
    n = min(len(harness_replies), len(template_replies))
    return {"prompts": n, "differing": len(differing), "rate": round(len(differing) / n, 3) if n else 0.0,
            "differing_prompts": differing,
            "empty_replies": {"harness": sum(1 for h in harness_replies if not normalised_words(h)),
                              "template": sum(1 for t in template_replies if not normalised_words(t))}}
