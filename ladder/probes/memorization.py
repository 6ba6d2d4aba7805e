"""Rung `memorization`: the model recites its training samples but fails on held-out ones.

What it checks:
    Samples of the training data (`--data`) and of held-out data (`--eval-data`; without it, the
    rows past what the training run consumed when `data-count` measured that, and the rung says
    it took that split). Each sample becomes a prefix and a continuation: for conversations and
    prompt/answer rows the prompt through the model's chat template and the reply (with its
    end-of-turn token); for plain text the first tokens and the ones after. Per split: the exact-
    match rate of the greedy continuation and the mean per-token loss of the true continuation,
    both from one teacher-forced pass (greedy decoding reproduces a continuation exactly when
    each of its tokens is the model's top-1 after the ones before it).
    The rung fails when the model recites training samples and fails held-out ones beyond the
    thresholds. Training samples are scored first, a chunk at a time: once the ones missed already put
    the reciting bar out of reach and their loss already exceeds what a fit of train only allows, the
    verdict cannot change, and the held-out side is scored on as many samples for the side by side
    (a fine-tune that does not recite its own data costs a quarter of the passes).

Why it matters:
    A model that memorised a small training set scores well on everything it saw and badly on
    everything else, which looks like a broken model or a broken evaluation. Most often the
    training set was much smaller than intended (a loader that read a fraction of the data),
    which the `data-count` rung measures.

Symptom:
    Training loss near zero; correct, verbatim answers to training prompts; wrong or
    unrelated answers to new prompts of the same kind.

Fix:
    Check that the whole training set was loaded (see `data-count`); train fewer epochs or with
    more data; hold out an evaluation split and stop on its loss, not the training loss.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

from pydantic import BaseModel, ConfigDict, Field

from ladder.probes.base import Probe, ProbeContext, failed, passed, skip, warned

ANSWER_FIELDS = ("response", "completion", "answer", "output", "chosen", "target", "reply")


class MemorizationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples: int = Field(default=32, ge=1, description="Samples per split.")
    continuation_tokens: int = Field(default=32, ge=1, description="Longest continuation compared.")
    prefix_tokens: int = Field(default=32, ge=1, description="Prefix length for plain-text rows.")
    recite_rate: float = Field(default=0.8, ge=0, le=1,
                               description="Exact-match rate on training samples that counts as reciting.")
    exact_gap: float = Field(default=0.4, ge=0, le=1,
                             description="Train minus held-out exact-match rate beyond which the rung fails.")
    loss_ratio: float = Field(default=10.0, ge=1,
                              description="Held-out over train loss that fails (when train loss is tiny).")
    tiny_loss: float = Field(default=0.1, ge=0, description="Train loss (nats/token) under which the model fits train.")
    high_loss: float = Field(default=1.0, ge=0,
                             description="Held-out loss (nats/token) a model that only fits train must exceed too.")
    small_train: int = Field(default=2000, ge=1,
                             description="Training rows under which a memorising model points at data-count.")
    stop_when_settled: bool = Field(
        default=True, description="Stop scoring training samples once the ones scored rule out reciting and "
                                  "fitting only train (the verdict cannot change), and score as many held-out ones.")


def sample_of(row: dict[str, Any]) -> tuple[list[dict[str, str]] | None, str] | None:
    """(messages before the last assistant turn, its reply) for chats and prompt/answer rows;
    (None, text) for plain text; None when the row has neither."""
    from ladder.data.text import PROMPT_FIELDS, chat_turns

    for value in row.values():
        turns = chat_turns(value)
        if turns:
            last = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=None)
            if last is not None and last > 0:
                return turns[:last], turns[last]["content"]
    prompt = next((row[k] for k in PROMPT_FIELDS if isinstance(row.get(k), str) and row[k].strip()), None)
    answer = next((row[k] for k in ANSWER_FIELDS if isinstance(row.get(k), str) and row[k].strip()), None)
    if prompt is not None and answer is not None:
        return [{"role": "user", "content": prompt}], answer
    text = row.get("text")
    if isinstance(text, str) and text.strip():
        return None, text
    return None


def rows_of(path: str, limit: int | None, skip_rows: int = 0) -> Iterator[dict[str, Any]]:
    from ladder.data.rows import discover, read_rows

    seen = 0
    for _, row in read_rows(discover(path)):
        if row.value is None:
            continue
        seen += 1
        if seen <= skip_rows:
            continue
        yield row.value
        if limit is not None and seen - skip_rows >= limit:
            return


def conversation_rows(path: str, limit: int) -> list[tuple[str, str]]:
    """(user prompt, reply) of single-turn conversation or prompt/answer rows (for reference answers)."""
    pairs = []
    for row in rows_of(path, None):
        sample = sample_of(row)
        if sample and sample[0] and len(sample[0]) == 1 and sample[0][0]["role"] == "user":
            pairs.append((sample[0][0]["content"], sample[1]))
            if len(pairs) >= limit:
                break
    return pairs


def count_rows(path: str, cap: int = 1_000_000) -> int:
    return sum(1 for _ in rows_of(path, cap))


def up_to_stop(ids: list[int], stops: set[int]) -> list[int]:
    """`ids` cut after the first stop id (what a template writes after the end of turn is never generated)."""
    for index, token in enumerate(ids):
        if token in stops:
            return ids[:index + 1]
    return ids


def encode(hf, sample, params: MemorizationParams) -> tuple[list[int], list[int]] | None:
    """(prefix ids, continuation ids) of one sample."""
    messages, answer = sample
    if messages is None:
        ids = hf.tokenize(answer)
        if len(ids) < 4:
            return None
        cut = min(params.prefix_tokens, len(ids) // 2)
        return ids[:cut], ids[cut:cut + params.continuation_tokens]
    if hf.has_chat_template():
        prefix = hf.render(messages, add_generation_prompt=True)
        full = hf.render(messages + [{"role": "assistant", "content": answer}], add_generation_prompt=False)
        if full[:len(prefix)] == prefix and len(full) > len(prefix):
            return prefix, up_to_stop(full[len(prefix):], hf.stop_ids())[:params.continuation_tokens]
    else:
        prefix = hf.tokenize("\n".join(m["content"] for m in messages) + "\n")
    answer_ids = hf.tokenize(answer, add_special_tokens=False)
    return (prefix, answer_ids[:params.continuation_tokens]) if answer_ids else None


def score(hf, encoded: list[tuple[list[int], list[int]]], batch_size: int = 8,
          settled: Callable[[list[bool], list[float]], bool] | None = None) -> dict[str, Any]:
    """Exact-match of greedy continuations and mean per-token loss of the true ones, from one teacher-forced
    pass per chunk: greedy decoding reproduces a continuation exactly when each of its tokens is the model's
    top-1 given the ones before it, so nothing is generated. With `settled`, scoring stops after the chunk
    for whose results (exact, loss so far) it is true."""
    from ladder.probes.base import step_progress

    exact, losses = [], []
    for start in range(0, len(encoded), batch_size):
        logprobs, greedy = hf.greedy_agreement(encoded[start:start + batch_size])
        for row, hits in zip(logprobs, greedy):
            exact.append(all(hits))
            losses.append(-sum(row) / len(row))
        step_progress("scored", len(exact), len(encoded), within_phase=True)
        if settled is not None and len(exact) < len(encoded) and settled(exact, losses):
            break
    return {"exact": exact, "loss": losses,
            "exact_rate": sum(exact) / len(exact) if exact else float("nan"),
            "mean_loss": sum(losses) / len(losses) if losses else float("nan")}


def beyond_reach(total: int, params: MemorizationParams) -> Callable[[list[bool], list[float]], bool]:
    """Whether the first training samples scored (exact, loss) already decide that `total` of them can neither
    reach the reciting rate nor a mean loss under `tiny_loss` (losses are never negative), so that neither a
    fail nor a warn is possible whatever the rest and the held-out samples score."""
    def settled(exact: list[bool], losses: list[float]) -> bool:
        best_rate = (sum(exact) + total - len(exact)) / total
        return best_rate < params.recite_rate and sum(losses) > params.tiny_loss * total
    return settled


class Memorization(Probe):
    name = "memorization"
    needs = ("model", "data")
    capabilities = ("generate", "logits", "chat_template", "tokenize")
    Params = MemorizationParams

    def run(self, ctx: ProbeContext):
        from ladder.backends import model_backend
        from ladder.data.rows import DataError
        from ladder.internals import rounded

        params: MemorizationParams = ctx.params
        case = ctx.case
        split_note = None
        try:
            if case.eval_data:
                held_rows = list(rows_of(case.eval_data, params.samples * 4))
                held_source = case.eval_data
            else:
                consumed = self._consumed(ctx)
                if consumed is None:
                    skip("needs held-out samples: --eval-data PATH (case key `eval_data`); without it the rung "
                         "uses the rows past what the run consumed, which data-count measures from --run-dir")
                held_rows = list(rows_of(case.data, params.samples * 4, skip_rows=consumed))
                held_source = case.data
                split_note = (f"no --eval-data: held-out samples are the rows of --data after the first {consumed}, "
                              "which the training run did not consume (data-count)")
            train_rows = list(rows_of(case.data, params.samples * 4))
            train_total = count_rows(case.data)
        except DataError as exc:
            return failed(f"the data cannot be read: {exc}", data=case.data)

        hf = model_backend(ctx, "model")

        def encoded(rows):
            out = []
            for row in rows:
                sample = sample_of(row)
                pair = encode(hf, sample, params) if sample else None
                if pair and pair[0] and pair[1]:
                    out.append(pair)
                if len(out) >= params.samples:
                    break
            return out

        train = encoded(train_rows)
        held = encoded(held_rows)
        if not train or not held:
            which = "--data" if not train else "held-out"
            return failed(f"no usable samples in {which}: rows need a conversation, prompt/answer fields or text",
                          train_samples=len(train), held_out_samples=len(held))
        ctx.progress("training samples", 0.2)
        train_score = score(hf, train, settled=beyond_reach(len(train), params) if params.stop_when_settled else None)
        settled_after = len(train_score["exact"]) if len(train_score["exact"]) < len(train) else None
        if settled_after is not None:
            held = held[:settled_after]
        ctx.progress("held-out samples", 0.6)
        held_score = score(hf, held)
        evidence: dict[str, Any] = {
            "train": {"samples": len(train_score["exact"]), "exact_match": round(train_score["exact_rate"], 4),
                      "mean_loss": round(train_score["mean_loss"], 4), "source": case.data, "rows": train_total},
            "held_out": {"samples": len(held), "exact_match": round(held_score["exact_rate"], 4),
                         "mean_loss": round(held_score["mean_loss"], 4), "source": held_source},
            "series": {"train_loss": rounded(train_score["loss"], 4), "held_out_loss": rounded(held_score["loss"], 4)},
            "series_index": "sample",
            "flagged": [i for i, hit in enumerate(train_score["exact"]) if hit],
            "examples": self._examples(hf, train, train_score, held, held_score),
        }
        notes = [split_note] if split_note else []
        if settled_after is not None:
            misses = settled_after - sum(train_score["exact"])
            notes.append(f"settled after {settled_after} of {len(train)} training samples: {misses} missed already "
                         f"put the {params.recite_rate:.0%} reciting rate out of reach, and their loss already exceeds "
                         f"{params.tiny_loss} nats/token over all {len(train)}, so no further sample could change the "
                         f"verdict; held-out scored on as many (stop_when_settled)")
            evidence["train"]["available"] = len(train)
        if notes:
            evidence["notes"] = notes
        t_em, h_em = train_score["exact_rate"], held_score["exact_rate"]
        t_loss, h_loss = train_score["mean_loss"], held_score["mean_loss"]
        recites = t_em >= params.recite_rate and t_em - h_em > params.exact_gap
        ratio = h_loss / max(t_loss, 1e-3) if math.isfinite(h_loss) else math.inf
        fits_only_train = t_loss <= params.tiny_loss and ratio >= params.loss_ratio and h_loss >= params.high_loss
        evidence["loss_ratio"] = round(ratio, 3) if math.isfinite(ratio) else None
        small = train_total < params.small_train
        pointer = f"; the training set has only {train_total} rows: check data-count" if small else ""
        if recites:
            return failed(f"recites training samples ({t_em:.0%} exact) but not held-out ones ({h_em:.0%}); loss "
                          f"{t_loss:.3f} vs {h_loss:.3f} nats/token{pointer}", **evidence)
        if fits_only_train:
            return warned(f"training loss {t_loss:.3f} vs held-out {h_loss:.3f} nats/token ({ratio:.0f}x), though "
                          f"held-out exact match holds ({h_em:.0%} vs {t_em:.0%}){pointer}", **evidence)
        if settled_after is not None:
            return passed(f"does not recite its training samples: exact match {t_em:.0%} on {settled_after} of "
                          f"{len(train)} (the {params.recite_rate:.0%} bar is out of reach), loss {t_loss:.3f} "
                          f"nats/token; held-out {h_em:.0%}, {h_loss:.3f}", **evidence)
        return passed(f"held-out samples do about as well as training ones: exact match {h_em:.0%} vs {t_em:.0%}, "
                      f"loss {h_loss:.3f} vs {t_loss:.3f} nats/token", **evidence)

    @staticmethod
    def _consumed(ctx: ProbeContext) -> int | None:
        finding = ctx.finding_of("data-count")
        if finding is None:
            return None
        consumed = finding.evidence.get("consumed")
        parseable = finding.evidence.get("parseable")
        if isinstance(consumed, int) and isinstance(parseable, int) and 0 < consumed < parseable:
            return consumed
        return None

    @staticmethod
    def _examples(hf, train, train_score, held, held_score) -> list[dict[str, Any]]:
        out = []
        for split, pairs, scored in (("train", train, train_score), ("held_out", held, held_score)):
            for (prefix, cont), exact, loss in list(zip(pairs, scored["exact"], scored["loss"]))[:3]:
                out.append({"split": split, "prefix": hf.detokenize(prefix[-48:]), "continuation": hf.detokenize(cont),
                            "exact": exact, "loss": round(loss, 4)})
        return out
