"""served-format: the server does not serve the checkpoint the way it ships.

What it checks:
    With `--endpoint` (an OpenAI-compatible server) and `--model` (the checkpoint it
    is meant to serve), three paths on the same probe prompts, greedy: the server's
    `/v1/chat/completions` (the server renders the conversation with whatever
    template it has), the checkpoint's own template rendered here and posted raw to
    `/v1/completions` (the server's weights, the checkpoint's format), and the
    checkpoint run in-process through its template (ladder's reference). Chat against
    rendered-raw isolates the server's template (another family's, a `--chat-template`
    flag, a fallback to ChatML, a default system prompt, a second BOS); rendered-raw
    against in-process isolates what the server runs (another model, the base without
    the adapter, other weights): a reply counts against it where it leaves the
    checkpoint's at a token the checkpoint itself puts more than `max_near_tie_nats`
    below its own choice, not at a near tie that other numerics flip (a quantized
    GGUF on llama.cpp: measured 0.04-0.08 nats there, 5.6-8.7 for the base served in
    place of the fine-tune), which is a warn; where the checkpoint stops on its end-of-turn token and
    the server, on the same prompt text, runs on to the token limit (`finish_reason:
    length`), the server's stop set lacks it. `usage.prompt_tokens` of the chat request against the
    checkpoint's own token count shows the rendering's length on the server; where the
    server shows its rendering (`/tokenize` with messages on vLLM and SGLang, TGI's
    `/chat_tokenize`, llama.cpp's `/apply-template`), it is set beside the checkpoint's
    and classified (its template, another format, a second BOS) as prompt-format
    classifies a harness's text. A rendering that differs while the replies agree is a
    warn: a hazard that changed nothing measured. The same
    chat requests sent without a temperature show whether the server samples then (its
    generation config): a fail when your harness sends such requests, else a warn. Whether
    the server returns `logprobs` when asked is recorded (some silently ignore them).

Why it matters:
    A served model is tested through the server's rendering, not the checkpoint's: a
    server that renders with another template, or serves other weights, makes a
    healthy checkpoint look broken, and every verdict measured through it is about
    the server.

Symptom:
    Replies from the server are off (rambling, never stopping, answering another
    question) while the same checkpoint behaves in a notebook; the server's
    `prompt_tokens` differ from `len(apply_chat_template(...))`.

Fix:
    Serve the checkpoint's own template (`chat_template.jinja` in the served folder;
    no `--chat-template` from another model; llama.cpp `--jinja`), the stop tokens of
    its generation config, and the checkpoint you mean (load the adapter, or merge it).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ladder.models import Finding, Status
from ladder.probes.base import Probe, ProbeContext, failed, passed, warned


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(default=24, ge=1, description="Tokens generated per reply on each path.")
    max_prompts: int = Field(default=16, ge=1,
                             description="How many probe prompts to send (every default question: a model that "
                                         "answers one domain only shows a wrong format on that domain's questions).")
    min_reply_disagreement: float = Field(
        default=0.25, ge=0, le=1,
        description="Two paths differ when at least this share of the prompts (and at least two) get a different "
                    "reply (not the same first words), as in prompt-format.")
    max_near_tie_nats: float = Field(
        default=2.3, ge=0,
        description="Where the server's reply to the checkpoint's own prompt text leaves the checkpoint's reply, "
                    "a token the checkpoint puts at most this many nats below its own choice (ln 10: under ten "
                    "times less likely) is a near tie that other numerics flip (a quantized file, other kernels); "
                    "only replies that leave it further count against the server running the checkpoint.")


class ServedFormat(Probe):
    name = "served-format"
    needs = ("model", "endpoint")
    capabilities = ("chat", "completions", "generate", "chat_template", "tokenize", "logits")
    optional_capabilities = ("render_template",)
    Params = Params

    def run(self, ctx: ProbeContext):
        from ladder.backends import model_backend, served_model
        from ladder.backends.openai import ServerError
        from ladder.harness import probe_prompts
        from ladder.harness.compare import (differs_materially, disagreement, stop_set, template_analysis,
                                            template_replies)
        from ladder.probes.base import skip

        params: Params = ctx.params
        model = model_backend(ctx)
        tokenizer = model.tokenizer
        if not model.has_chat_template():
            skip("the checkpoint has no chat template: there is no format of its own to compare the server's with")
        server = served_model(ctx)
        prompts = [p["prompt"] for p in probe_prompts(ctx.case)][: params.max_prompts]
        analysis = template_analysis(ctx, model)
        ctx.progress("the checkpoint through its template, in-process", None)
        local_ids = template_replies(ctx, model, analysis, prompts, params.max_new_tokens)
        local = [model.detokenize(ids, skip_special_tokens=True) for ids in local_ids]
        stops = stop_set(model, analysis)
        local_stopped = [bool(ids) and ids[-1] in stops for ids in local_ids]
        chat, raw, rendered, local_counts = [], [], [], []
        try:
            for index, prompt in enumerate(prompts):
                ctx.progress(f"the server: prompt {index + 1}/{len(prompts)}", index / len(prompts))
                messages = [{"role": "user", "content": prompt}]
                text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                local_counts.append(len(model.render(messages)))
                rendered.append(text)
                chat.append(server.chat(messages, params.max_new_tokens))
                raw.append(server.complete(_without_added_bos(tokenizer, text), params.max_new_tokens))
        except ServerError as exc:  # cannot measure: not a verdict about the server's format
            return Finding(status=Status.ERROR, summary=f"the server at {server.url} failed on the probe prompts: {exc}",
                           evidence={"endpoint": server.url, "served_model": server.model})
        try:
            rendering = server_rendering(server, model, analysis, prompts[0], rendered[0])
        except ServerError as exc:
            rendering = {"error": str(exc)}
        template_differ = disagreement([r.text for r in chat], [r.text for r in raw])
        weights_differ = disagreement([r.text for r in raw], local)
        example = next(iter(template_differ["differing_prompts"] or weights_differ["differing_prompts"] or [0]))
        evidence = {
            "endpoint": server.url, "served_model": server.model, "listed_models": server.listed,
            "server_capabilities": sorted(server.capabilities),
            "logprobs": "returned when asked" if "logprobs" in server.capabilities
            else "ignored: the server returns no logprobs when asked",
            "prompt_tokens": {"server_chat": [r.prompt_tokens for r in chat], "checkpoint_template": local_counts},
            "side_by_side": {"prompt": prompts[example], "checkpoint_renders": rendered[example],
                             "server_chat_reply": chat[example].text, "checkpoint_format_on_server": raw[example].text,
                             "checkpoint_in_process": local[example]},
            "template_paths_differ": template_differ, "weights_paths_differ": weights_differ,
            "finish_reasons": [r.finish_reason for r in chat], "requests": server.requests,
            "server_rendering": rendering,
        }
        if rendering.get("text") is not None:
            evidence["side_by_side"]["server_renders"] = rendering["text"]
            evidence["side_by_side"]["rendering_prompt"] = prompts[0]

        def material(differ) -> bool:
            return differs_materially(differ["differing"], differ["prompts"], params.min_reply_disagreement)

        # the checkpoint's own prompt text on the server: where the server says what the checkpoint says and then
        # runs on to the token limit instead of stopping, the server's stop set lacks the end-of-turn token
        ran_on = [i for i, (stopped, reply, own) in enumerate(zip(local_stopped, raw, local))
                  if stopped and reply.finish_reason == "length" and own.strip()
                  and reply.text.strip().startswith(own.strip())]
        evidence["stops"] = {"checkpoint_stops_on": sorted(tokenizer.convert_ids_to_tokens(sorted(stops))),
                             "checkpoint_stopped": sum(local_stopped), "server_ran_to_the_limit": len(ran_on)}
        if differs_materially(len(ran_on), len(prompts), params.min_reply_disagreement):
            stopped = sum(local_stopped)
            return failed(f"the server does not stop where the checkpoint does: on the checkpoint's own prompts it "
                          f"ran to the {params.max_new_tokens}-token limit on {len(ran_on)} of the {stopped} that the "
                          f"checkpoint ends with {', '.join(evidence['stops']['checkpoint_stops_on'])} (its stop "
                          "set lacks the end-of-turn token: the server's generation config, or a --stop flag)",
                          **evidence)
        counts = [(s, c) for s, c in zip(evidence["prompt_tokens"]["server_chat"], local_counts) if s is not None]
        longer = [s - c for s, c in counts if s != c]
        renders_otherwise = rendering.get("same_as_checkpoint") is False
        how = f": its {rendering['via']} shows the conversation rendered {rendering['detail']}" \
            if renders_otherwise else ""
        if material(template_differ):
            length = (f"; its chat prompts are {_tokens_words(longer)} than the checkpoint's rendering"
                      if longer else "")
            return failed(f"the server renders conversations with another template than the checkpoint's{how}; "
                          f"its chat replies differ from the checkpoint's own format sent raw to it on "
                          f"{template_differ['differing']}/{template_differ['prompts']} prompts{length}", **evidence)
        if material(weights_differ):
            ctx.progress("where the server's replies leave the checkpoint's", None)
            leaving = departures(model, [model.render([{"role": "user", "content": p}]) for p in prompts], local_ids,
                                 raw, weights_differ["differing_prompts"], stops)
            evidence["departures"] = leaving
            confident = [d for d in leaving if d["checkpoint_nats_below_its_choice"] > params.max_near_tie_nats]
            if differs_materially(len(confident), weights_differ["prompts"], params.min_reply_disagreement):
                return failed(f"the server does not run the checkpoint {ctx.case.model}: on the checkpoint's own "
                              f"prompt text its replies differ from the checkpoint's in-process on "
                              f"{weights_differ['differing']}/{weights_differ['prompts']} prompts, {len(confident)} "
                              f"of them at a token the checkpoint puts over {params.max_near_tie_nats:g} nats below "
                              "its own choice (another model, the base without its adapter, other weights or "
                              "settings)", **evidence)
            return warned(f"the server's replies to the checkpoint's own prompt text differ from the checkpoint's "
                          f"in-process on {weights_differ['differing']}/{weights_differ['prompts']} prompts, but "
                          f"{len(leaving) - len(confident)} of them leave it where the checkpoint itself nearly ties "
                          f"(its own token and the server's within {params.max_near_tie_nats:g} nats): the same "
                          "weights under other numerics (a quantized file, other kernels), not another model",
                          **evidence)
        if renders_otherwise:  # a hazard that changed no reply measured here
            return warned(f"the server renders conversations otherwise than the checkpoint{how}; but its chat "
                          f"replies agree with the checkpoint's format on "
                          f"{template_differ['prompts'] - template_differ['differing']}/{template_differ['prompts']} "
                          "prompts: other prompts (a system message, several turns) may not", **evidence)
        sampling = injected_sampling(server, prompts, params.max_new_tokens)
        evidence["unset_temperature"] = sampling
        if sampling["replies_vary"]:
            omitted = harness_omits_temperature(ctx, server.url)
            words = (f"a request that leaves temperature unset is sampled by the server (the same prompt got "
                     f"{sampling['distinct']} different replies in {sampling['requests']}: its generation config "
                     "samples)")
            if omitted:
                return failed(f"your harness's requests leave temperature unset ({omitted} of them) and {words}: "
                              "its replies vary from run to run; send temperature 0 (or fix the served "
                              "generation_config.json)", **evidence)
            return warned(f"{words}; your harness is not seen sending such requests", **evidence)
        return passed(f"the server at {server.url} serves the checkpoint as it ships: the same replies through its "
                      f"chat endpoint, the checkpoint's format and in-process on "
                      f"{template_differ['prompts'] - template_differ['differing']}/{template_differ['prompts']} "
                      f"prompts; logprobs {evidence['logprobs']}", **evidence)


def server_rendering(server, model, analysis, prompt: str, local_text: str) -> dict:
    """The server's rendering of one probe conversation beside the checkpoint's (`local_text`, its template's
    text with the generation prompt): the same ids (or text), and what the server's text went through,
    classified against the checkpoint's template as a harness's text is. Empty when the server shows none."""
    from ladder.templates import classify

    if "render_template" not in server.capabilities:
        return {}
    messages = [{"role": "user", "content": prompt}]
    found = server.rendering(messages)
    tokenizer = model.tokenizer
    local_ids = model.render(messages)
    text = found.text if found.text is not None else model.detokenize(found.ids, skip_special_tokens=False)
    out = {"via": found.via, "text": text, "checkpoint_text": local_text}
    if found.ids is not None:
        out.update(server_ids=found.ids, checkpoint_ids=local_ids, same_as_checkpoint=found.ids == local_ids)
    else:
        out["same_as_checkpoint"] = text == local_text
    if analysis is not None:
        kind = classify(text, analysis, prompt=prompt, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token)
        extra = f" with {kind.extra_leading_bos} BOS too many" if kind.extra_leading_bos else ""
        detail = kind.detail + extra
        if kind.kind == "template" and not extra:
            detail = ("the checkpoint's template, but other token ids" if found.ids is not None
                      else "the checkpoint's template, but not its exact text")
        out.update(format=kind.kind, detail=detail)
        if kind.extra_leading_bos:
            out["extra_leading_bos"] = kind.extra_leading_bos
    else:
        out["detail"] = "not the checkpoint's rendering"
    if out["same_as_checkpoint"]:
        out["detail"] = "the checkpoint's own rendering"
    return out


def injected_sampling(server, prompts: list[str], max_new_tokens: int, repeats: int = 2) -> dict:
    """The same chat requests sent `repeats` times without a temperature: do the replies vary?"""
    distinct, sent = 0, 0
    for prompt in prompts:
        replies = {server.chat([{"role": "user", "content": prompt}], max_new_tokens, greedy=False).text
                   for _ in range(repeats)}
        distinct = max(distinct, len(replies))
        sent += repeats
    return {"requests": sent, "distinct": distinct, "replies_vary": distinct > 1}


def departures(model, prompt_ids: list[list[int]], local_ids: list[list[int]], replies, which: list[int],
               stops: set[int]) -> list[dict]:
    """Where each server reply (`replies[i]`, for i in `which`) first leaves the checkpoint's own greedy reply
    (`local_ids[i]`) and how many nats below its own choice the checkpoint puts the server's token there: near
    zero for a near tie that other numerics flip, large for a token another model chose. A server reply that
    stopped is taken to end with the checkpoint's stop token."""
    pairs, found = [], []
    for i in which:
        server = model.tokenize(replies[i].text, add_special_tokens=False)
        own = local_ids[i]
        if replies[i].finish_reason == "stop" and own and own[-1] in stops:
            server = server + own[-1:]
        at = next((k for k, (a, b) in enumerate(zip(own, server)) if a != b), None)
        if at is None:  # one reply runs on where the other stopped: they agree as far as both go
            found.append({"prompt": i, "position": min(len(own), len(server)), "checkpoint_nats_below_its_choice": 0.0})
            continue
        context = prompt_ids[i] + own[:at]
        pairs += [(context, [own[at]]), (context, [server[at]])]
        found.append({"prompt": i, "position": at, "checkpoint_token": model.detokenize([own[at]]),
                      "server_token": model.detokenize([server[at]])})
    scores = iter(model.score(pairs)) if pairs else iter(())
    for item in found:
        if "checkpoint_nats_below_its_choice" not in item:
            mine, theirs = next(scores)[0], next(scores)[0]
            item["checkpoint_nats_below_its_choice"] = round(max(0.0, mine - theirs), 3)
    return found


def harness_omits_temperature(ctx, url: str) -> int:
    """How many of the harness's recorded requests to this server leave temperature unset (0 when the harness
    was not run, or sets it)."""
    run = ctx.resources.peek("harness:calls")
    if run is None:
        return 0
    root = url.rstrip("/")
    return sum(1 for record in run.generate_records()
               if (record.get("http") or {}).get("url", "").startswith(root)
               and "temperature" not in (record.get("generate_kwargs") or {}))


def _without_added_bos(tokenizer, text: str) -> str:
    """The rendered text without its leading BOS when the server's tokenizer will add one itself."""
    bos = tokenizer.bos_token
    if bos and text.startswith(bos):
        ids = tokenizer("x")["input_ids"]
        if ids and ids[0] == tokenizer.bos_token_id:
            return text[len(bos):]
    return text


def _tokens_words(differences: list[int]) -> str:
    low, high = min(differences), max(differences)
    span = f"{low}" if low == high else f"{low} to {high}"
    return f"{span} tokens {'longer' if low > 0 else 'shorter' if high < 0 else 'different'}"
