"""harness-control: the base model, run through the exact same harness path, degrades too.

What it checks:
    Runs your harness a second time with the tap redirecting its
    `from_pretrained` of the model's path to the base model's path (the tokenizer
    it loads and everything else stay as they are), so the base goes through the
    exact same code. For each model, the replies your harness got are scored
    against ladder's correct path for that model (its chat template if it has
    one, else plain text, greedy): the mean log-probability the model gives
    your harness's reply against its own greedy reply, given the correct prompt,
    and answer accuracy where the case gives expectations. If the base degrades
    on the harness path about as much as the fine-tune, the harness is at fault.
    When the fine-tune does not degrade on your harness path there is nothing to
    explain, and the base is neither loaded nor run.

Why it matters:
    "Run the base model through the exact same inference path" is the control
    experiment that separates a broken harness from a broken fine-tune. Without
    it, a harness bug (sampling noise, a cut prompt, a wrong decode) is taken for
    damage done by training, and the fine-tune gets redesigned for nothing.

Symptom:
    Both the fine-tune and the base look bad in your harness; neither looks bad
    through the model's own chat template and greedy decoding.

Fix:
    Fix the harness before touching the model: compare what it sends and how it
    decodes with `apply_chat_template` + greedy `generate` (see the prompt-format,
    special-tokens and generation-config rungs for the details the tap recorded).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ladder.harness import (HarnessProbe, HarnessRun, harness_error_finding, harness_redirect, probe_prompts,
                            run_harness)
from ladder.probes.base import ProbeContext, failed, passed, skip


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(default=24, ge=1, description="Tokens of ladder's own greedy reply per prompt.")
    min_degradation: float = Field(default=1.0, ge=0,
                                   description="Nats per token by which the harness's replies must be worse to count.")
    base_share: float = Field(default=0.5, gt=0, le=1,
                              description="The base 'degrades as much' when its drop is at least this share of the fine-tune's.")


class HarnessControl(HarnessProbe):
    name = "harness-control"
    needs = ("model", "base", "runnable-harness")
    capabilities = ("generate", "logits", "chat_template", "tokenize")
    Params = Params

    def check(self, ctx: ProbeContext, tuned_run: HarnessRun):
        from ladder.backends import model_backend

        params: Params = ctx.params
        case = ctx.case
        prompts = probe_prompts(case)

        def build_base_run():
            ctx.progress("running your harness with the base model swapped in", None)
            return run_harness(case, [p["prompt"] for p in prompts], redirect=harness_redirect(case, case.base),
                               resources=ctx.resources)

        tuned = self._score(ctx, model_backend(ctx, "model"), tuned_run, prompts, params, "model")
        how = (f"the harness was run again with from_pretrained({(case.harness_model or case.model)!r}) "
               f"redirected to {case.base!r}; its tokenizer and code unchanged")
        if tuned["degradation"] is None:
            skip("no reply to score: the harness returned nothing the tap could see", how=how)
        if tuned["degradation"] < params.min_degradation:
            # nothing to explain: the control (the base through the same path) is not needed, nor run
            return passed(f"your harness path works for the fine-tune: its replies score "
                          f"{tuned['degradation']:.2f} nats/token below ladder's correct path",
                          how="the fine-tune does not degrade on your harness path, so the base was not run "
                              "through it", degradation_nats_per_token={"model": tuned["degradation"], "base": None},
                          metrics={name: {"model": value, "base": None} for name, value in tuned["metrics"].items()},
                          side_by_side={"prompt": prompts[0]["prompt"],
                                        "model_harness_answer": tuned["harness_answers"][0],
                                        "model_correct_path_answer": tuned["ladder_answers"][0]})
        model_backend(ctx, "base")  # loaded first, so that the harness asking for the base is lent ladder's copy
        base_run = ctx.resources.get("harness:calls:base", build_base_run)
        if (problem := harness_error_finding(base_run, ctx)) is not None:
            return problem
        if not any(load.get("redirected_to") for load in base_run.model_loads()):
            skip(f"your harness does not load the model from {case.harness_model or case.model} with "
                 "from_pretrained, so ladder cannot swap the base in: run the base through it yourself and give "
                 "--transcript")
        base = self._score(ctx, model_backend(ctx, "base"), base_run, prompts, params, "base")
        evidence = {
            "how": how,
            "degradation_nats_per_token": {"model": tuned["degradation"], "base": base["degradation"]},
            "metrics": {name: {"model": tuned["metrics"][name], "base": base["metrics"][name]}
                        for name in tuned["metrics"]},
            "side_by_side": {"prompt": prompts[0]["prompt"],
                             "model_harness_answer": tuned["harness_answers"][0],
                             "model_correct_path_answer": tuned["ladder_answers"][0],
                             "base_harness_answer": base["harness_answers"][0],
                             "base_correct_path_answer": base["ladder_answers"][0]},
        }
        tuned_drop, base_drop = tuned["degradation"], base["degradation"]
        if tuned_drop is None or base_drop is None:
            skip("no reply to score: the harness returned nothing the tap could see", **evidence)
        if base_drop >= max(params.min_degradation, params.base_share * tuned_drop):
            return failed(f"the base degrades on your harness path as much as the fine-tune "
                          f"({base_drop:.2f} vs {tuned_drop:.2f} nats/token below the correct path): "
                          f"the harness is at fault, not the fine-tune", **evidence)
        return passed(f"the base is fine on your harness path ({base_drop:.2f} nats/token below the correct path, "
                      f"the fine-tune {tuned_drop:.2f}): the problem is in the fine-tune, go down the ladder",
                      **evidence)

    def _score(self, ctx, model, run, prompts, params: Params, which: str) -> dict:
        import re

        from ladder.harness.compare import generate_cut, output_ids, stop_set
        from ladder.templates import TemplateError, analyse, renderer_for_tokenizer

        tokenizer = model.tokenizer
        analysis = None
        if model.has_chat_template():
            try:
                analysis = analyse(renderer_for_tokenizer(tokenizer))
            except TemplateError:
                analysis = None
        stops = stop_set(model, analysis)
        texts = [p["prompt"] for p in prompts][: len(run.calls)]
        correct_ids = [model.render([{"role": "user", "content": t}]) if analysis is not None
                       else model.tokenize(t) for t in texts]
        ladder_replies = ctx.resources.get(f"harness-control:replies:{which}", lambda: generate_cut(
            model, correct_ids, stops, params.max_new_tokens))
        harness_replies = []
        for index in range(len(texts)):
            output = output_ids(run.sent(index), tokenizer, texts[index])
            if output:
                reply = []
                for token in output:
                    if token in stops or token == tokenizer.pad_token_id:
                        break
                    reply.append(token)
            else:
                reply = model.tokenize(run.calls[index].get("output") or "", add_special_tokens=False)
            harness_replies.append(reply)
        strip = lambda r: [t for t in r if t not in stops]  # noqa: E731
        pairs = [(p, strip(h), strip(l)) for p, h, l in zip(correct_ids, harness_replies, ladder_replies)
                 if strip(h) and strip(l)]
        if not pairs:
            return {"degradation": None, "metrics": {"accuracy_harness": None, "accuracy_correct_path": None,
                                                     "mean_logprob_harness": None, "mean_logprob_correct_path": None},
                    "harness_answers": [""], "ladder_answers": [""]}
        scored = model.score([(p, h) for p, h, _ in pairs] + [(p, l) for p, _, l in pairs])
        n = len(pairs)
        mean = lambda rows: sum(sum(r) / len(r) for r in rows) / len(rows)  # noqa: E731
        harness_lp, ladder_lp = mean(scored[:n]), mean(scored[n:])
        harness_text = [run.calls[i].get("output") or "" for i in range(len(texts))]
        ladder_text = [model.detokenize(strip(r), skip_special_tokens=True) for r in ladder_replies]
        expects = [p.get("expect") for p in prompts][: len(texts)]
        checked = [i for i, e in enumerate(expects) if e]

        def accuracy(answers):
            return round(sum(re.search(expects[i], answers[i]) is not None for i in checked) / len(checked), 3) \
                if checked else None

        return {"degradation": round(ladder_lp - harness_lp, 3),
                "metrics": {"accuracy_harness": accuracy(harness_text), "accuracy_correct_path": accuracy(ladder_text),
                            "mean_logprob_harness": round(harness_lp, 3), "mean_logprob_correct_path": round(ladder_lp, 3)},
                "harness_answers": harness_text, "ladder_answers": ladder_text}
