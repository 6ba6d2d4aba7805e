"""Rung `label-mask`: the labels train on nothing or on the wrong tokens.

What it checks:
    Takes training examples as the trainer saw them: a dump of batches (`--batches`: input_ids
    and labels, see docs/data-formats.md) or the user's collator (`--collator file.py:func`,
    called as `collate(samples, tokenizer)` on rows of `--data`). Per example it measures the
    share of positions whose label is not -100, whether those are the answer's tokens (with
    the model's tokenizer, the assistant header and end-of-turn marker are taken from its own
    chat template: tokens after the header up to the end of turn are the answer, the rest the
    prompt) and whether an end token (EOS, end of turn) is ever trained. Without a tokenizer it
    judges by position: answers come last.

Why it matters:
    A completion-only collator whose response template never matches masks every label: the
    model trains on nothing, or only on padding. With pad == eos, masking padding also masks
    the EOS, and the model never learns to stop. An inverted mask trains the model to write
    prompts.

Symptom:
    Loss that is zero or NaN from the first step (nothing to train on); a fine-tune that
    behaves exactly like its base; answers that never end; a model that echoes questions.

Fix:
    Make the response template match the tokens the chat template really produces (tokenize
    it in context, or give token ids); set a pad token distinct from EOS, or mask padding by
    attention mask rather than by token id; mask the prompt, train the answer and its end token.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ladder.probes.base import Probe, ProbeContext, failed, passed, skip, warned

IGNORE = -100
SENTINEL_USER, SENTINEL_ANSWER = "Xqzuserq", "Xqzanswerq"


class LabelMaskParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    examples: int = Field(default=64, ge=1, description="How many examples to inspect.")
    batch_size: int = Field(default=8, ge=1, description="Samples per call of the user's collator.")
    max_untrained_fraction: float = Field(
        default=0.05, ge=0, le=1, description="Share of examples with every label -100 before the rung fails.")
    shown_tokens: int = Field(default=96, ge=8, description="Tokens of the example shown in the evidence.")


@dataclass
class Markers:
    """Where answers begin and end, in whitespace-free text (from the model's chat template)."""

    header: str
    end: str
    raw_header: str = ""
    raw_end: str = ""


@dataclass
class Measured:
    real: int
    trained: int
    answer: int | None = None
    answer_trained: int | None = None
    prompt: int | None = None
    prompt_trained: int | None = None
    stop_present: bool = False
    stop_trained: bool = False
    parts: list[str] = field(default_factory=list)  # per position: prompt / answer / space / pad

    @property
    def share(self) -> float:
        return self.trained / self.real if self.real else 0.0


class LabelMask(Probe):
    name = "label-mask"
    optional_capabilities = ("tokenize",)  # the tokenizer of the model a rung before loaded, where there is one
    needs = ("labels",)
    Params = LabelMaskParams

    def run(self, ctx: ProbeContext):
        from ladder.data.batches import BatchError, load_batches

        params: LabelMaskParams = ctx.params
        case = ctx.case
        tokenizer = _tokenizer(ctx) if case.model else None
        if case.batches:
            origin = f"batches {Path(case.batches).name}"
            try:
                examples = load_batches(case.batches, limit=params.examples)
            except BatchError as exc:
                return warned(f"cannot read the batch dump: {exc}", batches=case.batches)
        else:
            if tokenizer is None:
                skip("--collator needs the model's tokenizer: give --model PATH (case key `model`)")
            if not case.data:
                skip("--collator needs samples to collate: give --data PATH (case key `data`)")
            origin = f"collator {case.collator.rpartition(':')[2]}"
            examples, problem = _collated(ctx, tokenizer, params)
            if problem:
                return warned(problem, collator=case.collator)
        ctx.progress(f"measuring {len(examples)} examples", 0.5)
        return _judge(examples, tokenizer, case.model, params, origin)


# ---- inputs ----------------------------------------------------------------------------------


def _tokenizer(ctx: ProbeContext):
    loaded = ctx.resources.peek("hf:model")
    if loaded is not None and getattr(loaded, "tokenizer", None) is not None:
        return loaded.tokenizer

    def build():
        from transformers import AutoTokenizer

        from ladder.backends.hf import _quiet_transformers

        _quiet_transformers()
        return AutoTokenizer.from_pretrained(ctx.case.model, trust_remote_code=ctx.case.trust_remote_code)

    return ctx.resources.get("hf:tokenizer:model", build)


def _collated(ctx, tokenizer, params):
    """Examples from the user's collator on rows of --data; (examples, None) or ([], why not)."""
    import traceback

    from ladder.data.batches import BatchError, examples_from_mapping
    from ladder.data.pyref import LoadError, load_object
    from ladder.data.rows import DataError, discover, read_rows

    try:
        collate = load_object(ctx.case.collator)
    except LoadError as exc:
        return [], f"cannot load the collator: {exc}"
    try:
        rows = [row.value for _, row in read_rows(discover(ctx.case.data), limit=params.examples)]
    except DataError as exc:
        return [], f"cannot read --data: {exc}"
    if not rows:
        return [], "no readable rows in --data to collate"
    examples = []
    for start in range(0, len(rows), params.batch_size):
        chunk = rows[start:start + params.batch_size]
        try:
            batch = collate(chunk, tokenizer)
        except Exception as exc:  # the user's code: report what it raised, do not crash the rung
            tail = traceback.format_exc().strip().splitlines()[-6:]
            return [], (f"the collator raised {type(exc).__name__}: {exc} when called as "
                        f"collate(samples, tokenizer) (see docs/data-formats.md); {' | '.join(tail[-2:])}")
        try:
            examples += examples_from_mapping(batch, f"collated batch {start // params.batch_size}")
        except BatchError as exc:
            return [], f"the collator's output is not a batch: {exc}"
    return examples, None


def _model_stop_ids(tokenizer, model_path: str | None) -> set[int]:
    """EOS ids of the tokenizer, config.json and generation_config.json (read as JSON)."""
    ids: set[int] = set()
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    for name in ("generation_config.json", "config.json"):
        path = Path(model_path or "") / name
        if model_path and path.is_file():
            try:
                eos = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
            except (OSError, ValueError, AttributeError):
                continue
            ids.update(int(e) for e in (eos if isinstance(eos, list) else [eos]) if isinstance(e, int))
    return ids


def template_markers(tokenizer) -> Markers | None:
    """The assistant header and end-of-turn text of the tokenizer's chat template, if it has one."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return None
    user = [{"role": "user", "content": SENTINEL_USER}]
    try:
        with_prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        without = tokenizer.apply_chat_template(user, add_generation_prompt=False, tokenize=False)
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": SENTINEL_ANSWER}],
                                             tokenize=False)
    except Exception:  # templates may refuse such a conversation; then judge by position
        return None
    if SENTINEL_ANSWER not in full or SENTINEL_USER not in full:
        return None
    between = full[full.index(SENTINEL_USER) + len(SENTINEL_USER):full.index(SENTINEL_ANSWER)]
    header = with_prompt[len(without):] if with_prompt.startswith(without) else ""
    if not _compact(header) or _compact(header) not in _compact(between):
        header = between
    end = full[full.index(SENTINEL_ANSWER) + len(SENTINEL_ANSWER):]
    end_ids = tokenizer(end, add_special_tokens=False)["input_ids"] if _compact(end) else []
    end_first = _compact(tokenizer.decode(end_ids[:1])) if end_ids else ""
    if not _compact(header):
        return None
    return Markers(header=_compact(header), end=end_first, raw_header=header, raw_end=end)


def _compact(text: str) -> str:
    return "".join(text.split())


# ---- measuring -------------------------------------------------------------------------------


def _real_positions(example, pad_id: int | None, stop_ids: set[int]) -> int:
    """How many leading positions are real tokens (right padding removed)."""
    if example.attention_mask is not None and any(example.attention_mask):
        return max(i for i, m in enumerate(example.attention_mask) if m) + 1
    if pad_id is None:
        return len(example.input_ids)
    end = len(example.input_ids)
    while end > 0 and example.input_ids[end - 1] == pad_id:
        end -= 1
    if end < len(example.input_ids) and pad_id in stop_ids:
        end += 1  # pad == eos: the first of the trailing run is the real end token
    return end


def _guess_stop_ids(examples, pad_id) -> tuple[set[int], str]:
    """Without a tokenizer: the id most examples end with (before padding), if most do."""
    lasts = Counter()
    for example in examples:
        n = _real_positions(example, pad_id, set())
        if n:
            lasts[example.input_ids[n - 1]] += 1
    if lasts:
        token, hits = lasts.most_common(1)[0]
        if len(examples) >= 2 and hits >= 0.6 * len(examples):
            return {token}, f"inferred: {hits} of {len(examples)} examples end with id {token}"
    return set(), "unknown (give --model for the tokenizer)"


def _pieces(tokenizer, ids: list[int], cache: dict[int, str]) -> list[str]:
    out = []
    for token in ids:
        if token not in cache:
            cache[token] = tokenizer.decode([token]) if token >= 0 else ""
        out.append(cache[token])
    return out


def _answer_parts(pieces: list[str], real: int, markers: Markers) -> list[str] | None:
    """prompt/answer per real position, from the header and end markers; None if no header."""
    compact, owner = [], []
    for index, piece in enumerate(pieces[:real]):
        for ch in _compact(piece):
            compact.append(ch)
            owner.append(index)
    text = "".join(compact)
    parts = ["prompt"] * real
    found = False
    start = text.find(markers.header)
    while start >= 0:
        found = True
        header_end = start + len(markers.header)
        first = owner[header_end - 1] + 1
        stop = text.find(markers.end, header_end) if markers.end else -1
        last = owner[stop + len(markers.end) - 1] if stop >= 0 else real - 1
        for position in range(first, min(last + 1, real)):
            parts[position] = "answer"
        start = text.find(markers.header, header_end)
    if not found:
        return None
    # whitespace-only tokens at a boundary belong to neither side: leave them out of both counts
    return [part if _compact(pieces[i]) else "space" for i, part in enumerate(parts)]


def measure(example, real: int, stop_ids: set[int], parts: list[str] | None) -> Measured:
    trained_at = [label != IGNORE for label in example.labels]
    m = Measured(real=real, trained=sum(trained_at[:real]))
    m.stop_present = any(t in stop_ids for t in example.input_ids[:real])
    m.stop_trained = any(t in stop_ids and trained_at[i] for i, t in enumerate(example.input_ids[:real]))
    if parts is not None:
        m.parts = parts + ["pad"] * (len(example.input_ids) - real)
        m.answer = parts.count("answer")
        m.prompt = parts.count("prompt")
        m.answer_trained = sum(1 for i, p in enumerate(parts) if p == "answer" and trained_at[i])
        m.prompt_trained = sum(1 for i, p in enumerate(parts) if p == "prompt" and trained_at[i])
    else:
        m.parts = ["?"] * real + ["pad"] * (len(example.input_ids) - real)
    return m


def _positional(example, real: int) -> tuple[float, float]:
    """(share trained in the first half, share trained in the last quarter) of the real tokens."""
    trained = [example.labels[i] != IGNORE for i in range(real)]
    half, quarter = trained[: max(1, real // 2)], trained[real - max(1, real // 4):]
    return sum(half) / len(half), sum(quarter) / len(quarter)


def _alignment(examples) -> str:
    """Whether unmasked labels copy input_ids at the same position (the transformers convention)."""
    same = shifted = total = 0
    for example in examples:
        ids, labels = example.input_ids, example.labels
        for i, label in enumerate(labels):
            if label == IGNORE:
                continue
            total += 1
            same += label == ids[i]
            shifted += i + 1 < len(ids) and label == ids[i + 1]
    if not total or same >= 0.9 * total:
        return "aligned"
    if shifted >= 0.9 * total:
        return "shifted"
    return "unrelated"


# ---- the verdict -----------------------------------------------------------------------------


def _judge(examples, tokenizer, model_path, params: LabelMaskParams, origin: str):
    from ladder.data.batches import Example

    alignment = _alignment(examples)
    if alignment == "shifted":  # labels[t] targets token t+1: move them onto the token they target
        examples = [Example(e.input_ids, [IGNORE] + e.labels[:-1], e.attention_mask, e.where, True)
                    for e in examples]
    pad_id = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    if tokenizer is not None:
        stop_ids, stop_basis = _model_stop_ids(tokenizer, model_path), "the model's eos ids"
    else:
        stop_ids, stop_basis = _guess_stop_ids(examples, pad_id)
    markers = template_markers(tokenizer)
    if markers and markers.end and tokenizer is not None:
        end_id = tokenizer.convert_tokens_to_ids(markers.end) if markers.end in tokenizer.get_vocab() else None
        if isinstance(end_id, int) and end_id >= 0:
            stop_ids.add(end_id)
    cache: dict[int, str] = {}
    measured, positional = [], []
    for example in examples:
        real = _real_positions(example, pad_id, stop_ids)
        parts = _answer_parts(_pieces(tokenizer, example.input_ids, cache), real, markers) \
            if markers and tokenizer is not None else None
        measured.append(measure(example, real, stop_ids, parts))
        positional.append(_positional(example, real) if real else (0.0, 0.0))

    n = len(measured)
    untrained = [i for i, m in enumerate(measured) if m.trained == 0]
    with_parts = [i for i, m in enumerate(measured) if m.answer is not None]
    stop_present = [i for i, m in enumerate(measured) if m.stop_present]
    stop_trained = [i for i in stop_present if measured[i].stop_trained]
    shares = [round(m.share, 3) for m in measured]
    evidence: dict[str, Any] = {
        "source": origin, "examples": n, "label_alignment": alignment,
        "trained_share": shares, "mean_trained_share": round(sum(shares) / n, 3) if n else 0.0,
        "untrained_examples": len(untrained), "stop_ids": sorted(stop_ids), "stop_ids_from": stop_basis,
        "examples_with_stop": len(stop_present), "examples_stop_trained": len(stop_trained),
    }
    if markers:
        evidence["template_markers"] = {"assistant_header": markers.raw_header, "end_of_turn": markers.raw_end}
    reasons, warnings, focus = [], [], None

    if untrained:
        share = len(untrained) / n
        message = (f"{len(untrained)} of {n} examples train on nothing (every label -100"
                   + (": the response template was never found)" if len(untrained) == n else ")"))
        (reasons if share > params.max_untrained_fraction else warnings).append(message)
        focus = untrained[0]
    answer_share = prompt_share = None
    if with_parts:
        answer_total = sum(measured[i].answer for i in with_parts)
        prompt_total = sum(measured[i].prompt for i in with_parts)
        answer_share = sum(measured[i].answer_trained for i in with_parts) / max(1, answer_total)
        prompt_share = sum(measured[i].prompt_trained for i in with_parts) / max(1, prompt_total)
        evidence.update(answer_tokens_trained=round(answer_share, 3), prompt_tokens_trained=round(prompt_share, 3),
                        examples_with_assistant_header=len(with_parts))
        trained_any = [i for i in with_parts if measured[i].trained]
        if trained_any and answer_share < 0.5 and prompt_share > 0.5:
            reasons.append(f"the prompt is trained instead of the answer: {prompt_share:.0%} of prompt tokens "
                           f"trained, {answer_share:.0%} of answer tokens")
            focus = focus if focus is not None else trained_any[0]
        elif trained_any and prompt_share > 0.5:
            warnings.append(f"the prompt is trained too ({prompt_share:.0%} of prompt tokens)")
        elif trained_any and answer_share < 0.9:
            warnings.append(f"only {answer_share:.0%} of answer tokens are trained")
    elif markers:
        evidence["note"] = "no example contains the chat template's assistant header; judged by position"
    if not with_parts:
        reversed_mask = [i for i, (head, tail) in enumerate(positional) if measured[i].trained and head > 0.5
                         and tail < 0.2]
        if len(reversed_mask) > n / 2:
            warnings.append(f"{len(reversed_mask)} of {n} examples train their beginning and mask their end: "
                            "the prompt may be trained instead of the answer")
            focus = focus if focus is not None else reversed_mask[0]
        elif n and all(m.trained == m.real for m in measured):
            warnings.append("nothing is masked: every token, prompt included, is trained")
    if stop_ids and stop_present and not stop_trained:
        reasons.append(f"no end token is ever trained: {len(stop_present)} examples contain one "
                       f"({', '.join(map(str, sorted(stop_ids)))}) and all mask it"
                       + (" (pad == eos?)" if pad_id is not None and pad_id in stop_ids else ""))
        focus = focus if focus is not None else stop_present[0]
    elif stop_ids and not stop_present and tokenizer is not None:
        warnings.append("no example contains an end token: the model is never taught to stop")
    if alignment == "unrelated":
        warnings.append("trained labels do not copy input_ids (neither aligned nor shifted by one)")

    index = focus if focus is not None else 0
    evidence["example"] = _show(examples[index], measured[index], tokenizer, cache, params.shown_tokens)
    evidence["reasons"], evidence["warnings"] = reasons, warnings
    head = f"{n} examples from {origin}: mean trained share {evidence['mean_trained_share']:.0%}"
    if answer_share is not None:
        head += f", answer tokens trained {answer_share:.0%}, prompt tokens {prompt_share:.0%}"
    if stop_present:
        head += f", end token trained in {len(stop_trained)} of {len(stop_present)}"
    if reasons:
        return failed(f"{reasons[0]}; {head}", **evidence)
    if warnings:
        return warned(f"{warnings[0]}; {head}", **evidence)
    return passed(head, **evidence)


def _show(example, m: Measured, tokenizer, cache, limit: int) -> dict[str, Any]:
    """One example's tokens with their mask, its end kept (answers are at the end)."""
    real = m.real
    start = max(0, min(real + 2, len(example.input_ids)) - limit)
    stop = min(len(example.input_ids), start + limit)
    pieces = _pieces(tokenizer, example.input_ids[start:stop], cache) if tokenizer is not None else None
    tokens = []
    for offset, position in enumerate(range(start, stop)):
        entry = {"i": position, "id": example.input_ids[position],
                 "trained": example.labels[position] != IGNORE, "part": m.parts[position]}
        if pieces is not None:
            entry["text"] = pieces[offset]
        tokens.append(entry)
    shown = {"where": example.where, "real_tokens": real, "trained_tokens": m.trained,
             "first_position_shown": start, "tokens": tokens}
    if pieces is not None:
        shown["rendered"] = "".join(f"[{t['text']}]" if t["trained"] else t["text"] for t in tokens)
        shown["legend"] = "[...] marks trained tokens (label not -100)"
    return shown
