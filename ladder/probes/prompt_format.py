"""prompt-format: the harness does not send prompts in the format the model was tuned on.

What it checks:
    Runs your harness under the tap on probe prompts (the case's own, with their
    expected answers, else ladder's default questions) and reads the exact text that reached the
    model. The model's chat template is analysed by rendering it (turn markers,
    generation prompt, end-of-turn string: no table of known families), and each
    sent text is classified: through the template, through it twice, without the
    generation prompt, in some other format, or raw. Then the model is run both
    ways, the harness's ids and the template's ids, with the same greedy decoding,
    and the paths are measured side by side: answer accuracy (where expectations
    exist), the rate of stopping on the end-of-turn token, distinct-2 and the mean
    token log-probability of the replies.

    The null hypothesis is that the harness is wrong: when what it sends is not
    the model's own format and the replies differ materially between the two
    paths (at least two prompts, and at least `min_reply_disagreement` of them, get a
    reply that does not start with the same words: greedy decoding of one model gives
    the same replies when the format does not matter), the rung fails, whatever the
    raw-path symptom is (empty replies, rambling, echoing, never stopping). It only
    warns when the replies are the same on both paths.

Why it matters:
    A chat-tuned model fed raw text continues the text instead of answering: it
    looks broken while it is fine. This is the most common reason a fine-tune
    "produces fluent garbage", and no amount of work on the model fixes it.

Symptom:
    Replies that ramble, repeat the question, never stop, or answer a different
    question; the model scores far below what training loss promised.

Fix:
    Build prompts with `tokenizer.apply_chat_template(messages,
    add_generation_prompt=True, return_dict=True)` and pass those ids (and the
    attention mask) to `generate`; do not render to text and tokenize again, and
    do not wrap an already rendered prompt a second time.
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

from ladder.harness import HarnessProbe, HarnessRun, probe_prompts
from ladder.probes.base import ProbeContext, failed, passed, skip, warned


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(default=24, ge=1, description="Tokens generated per reply on each path.")
    max_prompts: int = Field(default=16, ge=1, description="At most this many probe prompts are measured.")
    min_accuracy_gap: float = Field(default=0.25, ge=0,
                                    description="Template accuracy this much above the harness's is clearly better.")
    min_stop_gap: float = Field(default=0.3, ge=0,
                                description="A gap in end-of-turn stop rate that counts as clearly better.")
    min_logprob_gap: float = Field(default=0.5, ge=0,
                                   description="A gap in mean token log-probability (nats) that counts.")
    min_distinct_gap: float = Field(default=0.2, ge=0, description="A gap in distinct-2 that counts.")
    min_reply_disagreement: float = Field(
        default=0.25, ge=0, le=1,
        description="The paths differ materially when at least this share of the prompts (and at least two) get "
                    "a different reply (not the same first words) through the harness's format and the template.")


class PromptFormat(HarnessProbe):
    name = "prompt-format"
    capabilities = ("generate", "logits", "chat_template", "tokenize")
    Params = Params

    def check(self, ctx: ProbeContext, run: HarnessRun):
        from ladder.backends import model_backend
        from ladder.harness.compare import (differs_materially, disagreement, end_of_turn_id, harness_prompts,
                                            measure_path, metrics_table, sent_ids, stop_set, template_analysis)
        from ladder.templates import classify

        params: Params = ctx.params
        model = model_backend(ctx)
        tokenizer = model.tokenizer
        asked = harness_prompts(run, probe_prompts(ctx.case))[: params.max_prompts]
        sent = [sent_ids(run.sent(i), tokenizer, prompt=asked[i]["prompt"]) for i in range(len(asked))]
        if not any(ids for ids in sent):
            skip("the tap saw no generate() call, no decoding loop of forward passes and no request to an "
                 "OpenAI-compatible completions endpoint from your harness (it may reach its model another way): "
                 "give what it sends and receives as --transcript F.jsonl")
        analysis = template_analysis(ctx, model)
        texts = [tokenizer.decode(ids, skip_special_tokens=False) if ids else None for ids in sent]
        if analysis is None:
            skip("the model has no chat template (a base model?): there is no tuned format to compare the "
                 "harness's against", harness_sent=texts[0])
        kinds = [classify(text, analysis, prompt=item["prompt"], bos_token=tokenizer.bos_token,
                          eos_token=tokenizer.eos_token) if text is not None else None
                 for text, item in zip(texts, asked)]
        rows = [i for i, ids in enumerate(sent) if ids]
        counts = Counter(kinds[i].kind for i in rows)
        kind = counts.most_common(1)[0][0]
        template_info = {k: v for k, v in analysis.summary().items() if k != "single_prompt"}
        user_texts = [asked[i]["prompt"] if asked[i]["prompt"] is not None else kinds[i].user_content for i in rows]
        template_ids = [model.render([{"role": "user", "content": text or ""}]) for text in user_texts]
        harness_ids = [sent[i] for i in rows]
        evidence = {"harness_format": kind, "format_counts": dict(counts),
                    "format_detail": kinds[rows[0]].detail, "template": template_info,
                    "identical_to_template": sum(h == t for h, t in zip(harness_ids, template_ids)),
                    "prompts": len(rows), "harness_form": run.form}
        served = (run.sent(rows[0]) or {}).get("http")
        if served:
            evidence["served"] = served
        if all(kinds[i].kind == "template" for i in rows):
            how = (f"your harness posts the messages to {served['url']}, where the server applies its chat "
                   "template (compared here as the checkpoint's own; the server's rendering itself is not checked)"
                   if served and served.get("endpoint") == "chat/completions"
                   else "your harness sends prompts through the model's chat template")
            begun = next((kinds[i].reply_prefill for i in rows if kinds[i].reply_prefill), None)
            if begun:
                how += f", the reply begun by your harness ({begun.strip()[:40]!r}: an answer prefix of your own)"
            return passed(f"{how} ({len(rows)}/{len(rows)} prompts)",
                          side_by_side={"prompt": user_texts[0], "harness_sent": texts[rows[0]],
                                        "template_sends": tokenizer.decode(template_ids[0])}, **evidence)

        ctx.progress("running the model both ways", None)
        stops = stop_set(model, analysis)
        eot = end_of_turn_id(tokenizer, analysis)
        # a transcript may omit the prompt: its expectation is found by the message recovered from the text
        by_text = {p["prompt"].strip(): p["expect"] for p in probe_prompts(ctx.case)}
        expects = [asked[i]["expect"] or by_text.get((text or "").strip()) for i, text in zip(rows, user_texts)]
        harness_path = measure_path(model, harness_ids, expects, stops=stops, end_of_turn=eot,
                                    max_new_tokens=params.max_new_tokens)
        template_path = measure_path(model, template_ids, expects, stops=stops, end_of_turn=eot,
                                     max_new_tokens=params.max_new_tokens)
        table = metrics_table(harness_path, template_path)
        example = _example(harness_path, template_path)
        reported = run.calls[rows[example]].get("output")
        evidence.update({
            "side_by_side": {
                "prompt": user_texts[example],
                "harness_sent": texts[rows[example]],
                "template_sends": tokenizer.decode(template_ids[example]),
                "harness_answer": harness_path["replies"][example],
                "template_answer": template_path["replies"][example],
                "harness_reported_answer": reported,
            },
            "metrics": table,
            "samples": [{"prompt": user_texts[j], "format": kinds[rows[j]].kind,
                         "harness_answer": harness_path["replies"][j], "template_answer": template_path["replies"][j],
                         "harness_correct": harness_path["correct"][j], "template_correct": template_path["correct"][j]}
                        for j in range(min(16, len(rows)))],
        })
        better, reasons = _template_clearly_better(table, params)
        differ = disagreement(harness_path["replies"], template_path["replies"])
        evidence["why"] = reasons
        evidence["replies_differ"] = differ
        description = kinds[rows[0]].detail if kind == kinds[rows[0]].kind else _kind_words(kind)
        sends = f"your harness sends prompts {description} ({counts[kind]}/{len(rows)})"
        if better:
            return failed(f"{sends}; through the template the model does clearly better: {'; '.join(reasons)}",
                          **evidence)
        if differs_materially(differ["differing"], differ["prompts"], params.min_reply_disagreement):
            # the null hypothesis: the harness deviates from the model's format and that changes the replies
            empties = differ["empty_replies"]
            symptom = (f"; {empties['harness']}/{differ['prompts']} empty on your path" if empties["harness"]
                       > empties["template"] else "")
            return failed(f"{sends}, and the model's replies differ on {differ['differing']}/{differ['prompts']} "
                          f"prompts between your format and its own template{symptom}"
                          + (f" ({'; '.join(reasons)})" if reasons else ""), **evidence)
        return warned(f"{sends}, but the model replies the same through its template on "
                      f"{differ['prompts'] - differ['differing']}/{differ['prompts']} prompts", **evidence)


def _kind_words(kind: str) -> str:
    from ladder.templates import FORMAT_KINDS

    return FORMAT_KINDS.get(kind, kind)


def _example(harness_path, template_path) -> int:
    """The prompt to show: template right and harness wrong, else the first whose answers differ."""
    pairs = list(zip(harness_path["correct"], template_path["correct"]))
    for j, (h, t) in enumerate(pairs):
        if t and not h:
            return j
    for j, (h, t) in enumerate(zip(harness_path["replies"], template_path["replies"])):
        if h != t:
            return j
    return 0


def _gap(table, name):
    row = table.get(name)
    if not row or row["harness"] is None or row["template"] is None:
        return None
    return row["template"] - row["harness"]


def _template_clearly_better(table, params: Params) -> tuple[bool, list[str]]:
    accuracy = _gap(table, "accuracy")
    reasons = []
    votes = 0
    if accuracy is not None and accuracy >= params.min_accuracy_gap:
        reasons.append(f"accuracy {table['accuracy']['template']:.0%} vs {table['accuracy']['harness']:.0%}")
    for name, threshold, words in (("end_of_turn_stop_rate", params.min_stop_gap, "stops on end-of-turn"),
                                   ("mean_logprob", params.min_logprob_gap, "mean token log-prob"),
                                   ("distinct_2", params.min_distinct_gap, "distinct-2")):
        gap = _gap(table, name)
        if gap is not None and gap >= threshold:
            votes += 1
            reasons.append(f"{words} {table[name]['template']:.2f} vs {table[name]['harness']:.2f}")
    if accuracy is not None and accuracy >= params.min_accuracy_gap:
        return True, reasons
    accuracy_worse = accuracy is not None and accuracy <= -params.min_accuracy_gap / 2
    return votes >= 2 and not accuracy_worse, reasons
