"""generation-config: the settings generation actually ran with are not the ones intended or sane.

What it checks:
    Puts side by side, per setting, what `generate` really ran with (the tap's
    effective config: the harness's kwargs merged over the model's
    `generation_config.json`), what `generation_config.json` says, and what a
    sane run of this model needs. It flags eos ids without the template's
    end-of-turn token (a fail where generation went past it into your replies,
    measured on the tap's record; a warn where a stop string or your harness cut
    there), a `max_new_tokens` too small for the model's own answers
    (measured through the template: a fail when it cuts most of them, a warn when
    only the longest), sampling flags that contradict each other,
    an extreme temperature or repetition penalty, and the kwargs by which the
    harness overrode the model's config (often unknowingly, e.g. a hard-coded
    `eos_token_id=tokenizer.eos_token_id`).

Why it matters:
    The same weights give a different model under different settings: replies cut
    short, replies that never stop, loops suppressed into gibberish by a
    repetition penalty, or sampling noise taken for the model's answer.

Symptom:
    Truncated or endless answers, answers that change from run to run, odd word
    choices that read like the model avoiding its own vocabulary.

Fix:
    Pass only the settings you mean to change; keep the end-of-turn id in
    `eos_token_id`; give `max_new_tokens` room for a full answer; use greedy
    decoding (`do_sample=False`, no temperature) when judging a model.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ladder.harness import HarnessProbe, HarnessRun, probe_prompts
from ladder.probes.base import ProbeContext, failed, passed, skip, warned

SETTINGS = ("eos_token_id", "pad_token_id", "max_new_tokens", "max_length", "do_sample", "temperature", "top_p",
            "top_k", "num_beams", "repetition_penalty", "no_repeat_ngram_size")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer_budget: int = Field(default=64, ge=1,
                               description="Tokens allowed when measuring how long the model's own answers are.")
    max_repetition_penalty: float = Field(default=1.5, gt=1, description="Above this a repetition penalty is extreme.")
    max_temperature: float = Field(default=1.5, gt=0, description="Above this a sampling temperature is extreme.")


class GenerationConfigProbe(HarnessProbe):
    name = "generation-config"
    capabilities = ("generate", "chat_template", "tokenize")
    Params = Params

    def check(self, ctx: ProbeContext, run: HarnessRun):
        from pathlib import Path

        from ladder.backends import model_backend
        from ladder.harness.compare import (as_id_list, end_of_turn_id, runs_past_end_of_turn, template_analysis,
                                            template_replies)

        params: Params = ctx.params
        records = [r for r in (run.sent(i) for i in range(len(run.calls))) if r]
        if not records:
            skip("the tap saw no generate() call from your harness: give --transcript F.jsonl")
        model = model_backend(ctx)
        tokenizer = model.tokenizer
        file_config = model.generation_config.to_dict() if model.generation_config is not None else {}
        has_file = (Path(ctx.case.model) / "generation_config.json").exists()
        record = records[0]
        if record.get("via") == "forward":
            skip("your harness decodes by hand (its own loop of forward passes): its stopping and sampling are its "
                 "code, not a generation config")
        kwargs = record.get("generate_kwargs") or {}
        effective = record.get("effective_generation_config")
        if effective is None:  # a transcript: the file's settings with its kwargs over them
            effective = {**file_config, **{k: v for k, v in kwargs.items() if k in file_config or k in SETTINGS}}
        analysis = template_analysis(ctx, model)
        eot = end_of_turn_id(tokenizer, analysis) if analysis is not None and analysis.end_of_turn else None

        prompts = [p["prompt"] for p in probe_prompts(ctx.case)]
        replies = template_replies(ctx, model, analysis, prompts, params.answer_budget)
        stopped = [len(r) for r in replies if r and r[-1] in (set(model.stop_ids()) | set(as_id_list(eot)))]
        # the answer length is known when most answers end within the budget
        needed = max(stopped) if len(stopped) * 2 >= len(replies) else None
        input_length = max((len(row) for row in record.get("input_ids") or [[]]), default=0)

        problems, warnings = [], []
        eos_ids = as_id_list(effective.get("eos_token_id"))
        past_end = None
        if eot is not None and eot not in eos_ids:
            source = "your harness's eos_token_id" if "eos_token_id" in kwargs else "generation_config.json"
            lacking = (f"eos ids {eos_ids} (from {source}) lack the end-of-turn token "
                       f"{tokenizer.convert_ids_to_tokens(eot)!r} (id {eot})")
            past_end = runs_past_end_of_turn(run, tokenizer, eot)
            if past_end["changes_replies"]:
                problems.append(lacking)
            else:
                warnings.append(f"{lacking}, but on your prompts what follows it never reached your replies (a stop "
                                "string, a harness that cuts there, or replies that ended first)")
        budget = effective.get("max_new_tokens")
        if budget is None and effective.get("max_length") is not None:
            budget = effective["max_length"] - input_length
        typical = sorted(stopped)[len(stopped) // 2] if needed is not None else None
        if typical is not None and budget is not None and budget < typical:
            # most replies are cut on the user's path: what the model produces there changes
            problems.append(f"max_new_tokens {budget} is shorter than most of the model's own answers "
                            f"({typical} tokens typical, up to {needed}, through the template)")
        elif needed is not None and budget is not None and budget < needed:
            warnings.append(f"max_new_tokens {budget} cuts the longest of the model's own answers (up to {needed} "
                            f"tokens through the template; {typical} typical)")
        sampling = bool(effective.get("do_sample"))
        temperature = effective.get("temperature")
        if not sampling:
            ignored = [f"{k}={kwargs[k]}" for k, default in (("temperature", 1.0), ("top_p", 1.0), ("top_k", 50))
                       if k in kwargs and kwargs[k] not in (None, default)]
            if ignored:
                warnings.append(f"{', '.join(ignored)} passed with do_sample=False: ignored, generation is greedy")
        elif temperature is not None and temperature <= 0:
            problems.append(f"do_sample=True with temperature {temperature}")
        elif temperature is not None and temperature > params.max_temperature:
            problems.append(f"sampling temperature {temperature} is extreme (> {params.max_temperature})")
        penalty = effective.get("repetition_penalty")
        if penalty is not None and (penalty > params.max_repetition_penalty or penalty < 1.0):
            problems.append(f"repetition_penalty {penalty} is extreme (sane: 1.0 to {params.max_repetition_penalty})")
        overrides = {k: {"harness": v, "generation_config.json": file_config.get(k)} for k, v in kwargs.items()
                     if k in SETTINGS and k in file_config and v != file_config.get(k)}

        sane = {
            "eos_token_id": sorted(set(as_id_list(file_config.get("eos_token_id"))) | set(as_id_list(eot))
                                   | set(as_id_list(tokenizer.eos_token_id))),
            "max_new_tokens": f">= {needed}" if needed is not None else f"> {params.answer_budget} (answers did not stop)",
            "do_sample": "False (to judge a model)",
            "repetition_penalty": f"1.0 to {params.max_repetition_penalty}",
            "temperature": f"<= {params.max_temperature} when sampling",
        }
        table = {key: {"harness": effective.get(key), "generation_config.json": file_config.get(key) if has_file else None,
                       "sane": sane.get(key)} for key in SETTINGS
                 if effective.get(key) is not None or file_config.get(key) is not None or key in sane}
        varying = sorted({k for r in records for k, v in (r.get("generate_kwargs") or {}).items()
                          if v != kwargs.get(k)})
        evidence = {"settings": table, "overrides": overrides, "answer_tokens_needed": needed,
                    "past_end_of_turn": past_end,
                    "generation_config_file": has_file, "kwargs_vary_between_calls": varying}
        if problems:
            unknowing = [k for k in overrides if any(k in p for p in problems)]
            return failed("; ".join(problems), problems=problems, warnings=warnings,
                          harmful_overrides=unknowing, **evidence)
        if warnings:
            return warned("; ".join(warnings), warnings=warnings, **evidence)
        return passed("generation ran with sane settings: the end-of-turn token stops it, room for a full answer, "
                      "no contradictory or extreme sampling settings", **evidence)
