"""special-tokens: BOS doubled or missing, end-of-turn not a stop token, pad == eos.

What it checks:
    From the tap's record of what your harness sent: how many BOS tokens start
    each prompt, against what the model's own template path writes (two when the
    template writes BOS and the tokenizer adds another; none where the template
    path has one); whether the template's end-of-turn token is among the stop ids
    `generate` really ran with; whether pad == eos in the harness's tokenizer; and
    the rate of generations that ran to `max_new_tokens` without stopping.

    A BOS doubled or missing fails only where it changes the replies: ladder
    runs the model greedily on what your harness sent and on the template path
    and compares (materially different: at least two prompts and 25%, the bar
    prompt-format uses); the same replies make it a warn, with the count.
    An end-of-turn token missing from the stop ids fails only where it changes
    your replies, measured on the tap's record: the model emitted it, generation
    went on, and what followed reached the text your harness returned. A harness
    that stops on the marker's text (`stop_strings`) or cuts its replies there
    gets the same replies (a warn: the hazard, not on your path).

Why it matters:
    A doubled BOS is a sequence the model never saw in training and shifts every
    position; a missing one does the same. Without the end-of-turn token among
    the stop ids, the model answers and then keeps going, writing the next user
    turn itself: it looks like it cannot stop.

Symptom:
    Replies that run to the length limit, continue with a made-up next turn, or
    start oddly; a model that is fine in the trainer's evaluation but not in yours.

Fix:
    Tokenize the rendered template with `add_special_tokens=False` (or use
    `apply_chat_template(..., return_dict=True)`), pass the end-of-turn id in
    `eos_token_id` (a list with the eos id) or fix `generation_config.json`, and
    give the tokenizer a pad token distinct from eos.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ladder.harness import HarnessProbe, HarnessRun
from ladder.probes.base import ProbeContext, failed, passed, skip, warned


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_unstopped_rate: float = Field(default=0.5, ge=0, le=1,
                                      description="Warn when more generations than this ran to max_new_tokens.")
    max_new_tokens: int = Field(default=32, ge=1, description="Tokens per greedy reply when a BOS is measured.")
    min_reply_disagreement: float = Field(
        default=0.25, ge=0, le=1,
        description="A doubled or missing BOS fails when at least this share of the prompts (and at least two) "
                    "get a different reply than through the template path.")


def leading(ids: list[int], token: int | None) -> int:
    count = 0
    while token is not None and count < len(ids) and ids[count] == token:
        count += 1
    return count


def harness_stop_ids(record: dict, model) -> tuple[list[int] | None, str]:
    """The eos ids generate ran with (effective config), and where they came from."""
    from ladder.harness.compare import as_id_list

    effective = record.get("effective_generation_config")
    if effective is not None:
        return as_id_list(effective.get("eos_token_id")), "the tap (effective generation config)"
    kwargs = record.get("generate_kwargs") or {}
    if "eos_token_id" in kwargs:
        return as_id_list(kwargs["eos_token_id"]), "the transcript's generate_kwargs"
    return None, "unknown"


def bos_opens_every_turn(model, bos: int | None, analysis) -> bool:
    """Whether the tokenizer's BOS is the template's turn marker: it opens each turn of a two-turn
    conversation instead of the document once."""
    if bos is None or analysis is None:
        return False
    try:
        ids = model.render([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},
                              {"role": "user", "content": "z"}], add_generation_prompt=True)
    except Exception:  # a template that refuses this conversation: BOS taken as what it says it is
        return False
    return ids.count(bos) >= 3


def bos_changes_replies(ctx: ProbeContext, model, analysis, sent: list[list[int]], user_texts: list[str],
                        params: Params) -> dict | None:
    """Greedy replies to what the harness sent against the template path's, on the same prompts: whether a BOS
    fault changes them materially. None where the backend cannot generate."""
    from ladder.harness.compare import (differs_materially, disagreement, generate_cut, stop_set,
                                        template_replies)

    if "generate" not in model.capabilities:
        return None
    ctx.progress(f"measuring the BOS difference on {len(sent)} prompts", None)
    decode = model.tokenizer.decode
    harness = [decode(ids, skip_special_tokens=True)
               for ids in generate_cut(model, sent, stop_set(model, analysis), params.max_new_tokens)]
    template = [decode(ids, skip_special_tokens=True)
                for ids in template_replies(ctx, model, analysis, user_texts, params.max_new_tokens)]
    differ = disagreement(harness, template)
    first = differ["differing_prompts"][0] if differ["differing_prompts"] else 0
    return {**differ, "material": differs_materially(differ["differing"], differ["prompts"],
                                                     params.min_reply_disagreement),
            "example": f"{user_texts[first]!r}: {harness[first]!r} vs {template[first]!r} through the template",
            "harness_replies": harness, "template_replies": template}


class SpecialTokens(HarnessProbe):
    name = "special-tokens"
    capabilities = ("chat_template", "tokenize")
    optional_capabilities = ("generate",)
    Params = Params

    def check(self, ctx: ProbeContext, run: HarnessRun):
        from ladder.backends import model_backend
        from ladder.harness.compare import (as_id_list, end_of_turn_id, output_ids, runs_past_end_of_turn,
                                            sent_ids, template_analysis)

        params: Params = ctx.params
        model = model_backend(ctx)
        tokenizer = model.tokenizer
        analysis = template_analysis(ctx, model)
        records = [run.sent(i) for i in range(len(run.calls))]
        prompts = [call.get("prompt") for call in run.calls]
        rows = [(i, ids) for i, r in enumerate(records) if (ids := sent_ids(r, tokenizer, prompt=prompts[i]))]
        if not rows:
            skip("the tap saw no generate() call from your harness: give --transcript F.jsonl")
        bos = tokenizer.bos_token_id
        user_texts = [run.calls[i].get("prompt") or tokenizer.decode(ids, skip_special_tokens=True) for i, ids in rows]
        reference = [model.render([{"role": "user", "content": t}]) if analysis is not None
                     else model.tokenize(t) for t in user_texts]
        harness_bos = [leading(ids, bos) for _, ids in rows]
        reference_bos = [leading(ids, bos) for ids in reference]
        problems, warnings, bos_effect = [], [], None
        doubled = sum(1 for h in harness_bos if h >= 2)
        missing = sum(1 for h, r in zip(harness_bos, reference_bos) if r >= 1 and h == 0)
        bos_faults = []
        if doubled:
            bos_faults.append(f"{doubled}/{len(rows)} prompts start with {max(harness_bos)} BOS tokens "
                              f"({tokenizer.bos_token!r}); the template path writes {max(reference_bos)}")
        if missing and bos_opens_every_turn(model, bos, analysis):
            # the "BOS" is the template's turn marker (SmolLM2's <|im_start|>): a format question, prompt-format's
            warnings.append(f"{missing}/{len(rows)} prompts do not start with {tokenizer.bos_token!r}, which the "
                            "template writes at every turn: a turn marker, judged by prompt-format")
        elif missing:
            bos_faults.append(f"{missing}/{len(rows)} prompts have no BOS where the model's path starts with "
                              f"{tokenizer.bos_token!r}")
        if bos_faults:
            fault = "; ".join(bos_faults)
            bos_effect = bos_changes_replies(ctx, model, analysis, [ids for _, ids in rows], user_texts, params)
            if bos_effect is None:
                problems.append(f"{fault} (not measured: the backend cannot generate)")
            elif bos_effect["material"]:
                problems.append(f"{fault}, and the model's replies differ on {bos_effect['differing']}/"
                                f"{bos_effect['prompts']} prompts between what your harness sent and the template "
                                f"path (e.g. {bos_effect['example']})")
            else:
                warnings.append(f"{fault}, but the model replies the same on {bos_effect['prompts'] - bos_effect['differing']}"
                                f"/{bos_effect['prompts']} prompts both ways: the hazard, not a change on your path")
        eot = end_of_turn_id(tokenizer, analysis) if analysis is not None and analysis.end_of_turn else None
        stops, stops_source = harness_stop_ids(records[rows[0][0]], model)
        past_end = None
        if eot is not None and stops is not None and eot not in stops:
            missing_stop = (f"the end-of-turn token {tokenizer.convert_ids_to_tokens(eot)!r} (id {eot}) is not "
                            f"among the stop ids generate ran with {stops}")
            past_end = runs_past_end_of_turn(run, tokenizer, eot)
            if past_end["changes_replies"] and past_end["into_replies"]:
                problems.append(f"{missing_stop}: on {past_end['into_replies']}/{past_end['prompts']} prompts the "
                                "model ended its turn and generation went on into your replies (after it: "
                                f"{past_end['example']!r})")
            elif past_end["changes_replies"]:
                problems.append(f"{missing_stop} (no generated ids were recorded to see what followed it)")
            elif past_end["ran_past"]:
                warnings.append(f"{missing_stop}, and generation runs past it on {past_end['ran_past']}/"
                                f"{past_end['prompts']} prompts, but your harness cuts its replies there: the same "
                                "replies, more time")
            else:
                warnings.append(f"{missing_stop}; on your prompts generation did not go past it (a stop string, "
                                "or replies that ended first)")
        state = records[rows[0][0]].get("tokenizer") or {}
        pad = state.get("pad_token_id", tokenizer.pad_token_id)
        eos = state.get("eos_token_id", tokenizer.eos_token_id)
        if pad is not None and pad == eos:
            warnings.append(f"pad == eos (id {pad}): padding cannot be told from the end of a reply")
        unstopped, measured = 0, 0
        for index, _ in rows:
            record = records[index]
            output = output_ids(record, tokenizer, prompts[index])
            limit = (record.get("effective_generation_config") or {}).get("max_new_tokens") \
                or (record.get("generate_kwargs") or {}).get("max_new_tokens")
            if not output or not limit:
                continue
            measured += 1
            stop_set = set(stops or []) | set(as_id_list(eot))
            if len(output) >= limit and not stop_set.intersection(output):
                unstopped += 1
        unstopped_rate = round(unstopped / measured, 3) if measured else None
        if unstopped_rate is not None and unstopped_rate > params.max_unstopped_rate:
            warnings.append(f"{unstopped}/{measured} generations ran to max_new_tokens without stopping")
        evidence = {
            "leading_bos": {"harness": harness_bos, "template_path": reference_bos},
            "bos": {"token": tokenizer.bos_token, "id": bos},
            "end_of_turn": {"token": tokenizer.convert_ids_to_tokens(eot) if eot is not None else None, "id": eot},
            "stop_ids": stops, "stop_ids_from": stops_source,
            "pad_token_id": pad, "eos_token_id": eos,
            "ran_to_max_new_tokens_rate": unstopped_rate, "past_end_of_turn": past_end, "bos_effect": bos_effect,
            "harness_sent": tokenizer.decode(rows[0][1]),
            "template_sends": tokenizer.decode(reference[0]),
        }
        if problems:
            return failed("; ".join(problems), problems=problems, warnings=warnings, **evidence)
        if warnings:
            return warned("; ".join(warnings), warnings=warnings, **evidence)
        return passed(f"one BOS where the model's path has one, end-of-turn among the stop ids, "
                      f"pad distinct from eos ({len(rows)} prompts)", **evidence)
