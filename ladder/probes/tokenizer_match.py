"""tokenizer-match: the tokenizer and the model disagree.

What it checks:
    `len(tokenizer)` and the highest id the tokenizer can emit against the
    embedding's rows (ids beyond them index nothing, or garbage: a fail when your
    path uses one, written by the template, a special token or in what your harness
    sent; a warn otherwise); the bos, eos and
    pad ids of `config.json` and `generation_config.json` against the tokenizer's;
    added tokens whose embedding rows still sit at an initialisation (zero, a copy of
    another added row, the mean of the others as `resize_token_embeddings` writes it;
    with `--base`, not a row the base had trained): a fail when the chat template
    writes the token, a warn otherwise; and, when your harness loads its tokenizer from
    somewhere else than the model (or the case gives a base), whether the tokenizer
    in use belongs to this model: where it splits the probe text differently from
    one known to belong (the checkpoint's own, the base's), the model's loss on
    that text through each. With nothing to compare with, the embedding's own
    geometry: spelling variants (` the` / `the` / `The`) sit far closer than random
    tokens in a model's own tokenizer and at chance through one of another build
    (ids that mean other tokens). Near chance warns, never fails: a model trained
    from scratch on a small corpus with a big vocabulary leaves most rows untrained
    and sits at chance as well (vocabularies with too few variant pairs, as tiny
    ones, are not measured).

Why it matters:
    A tokenizer with tokens the embedding lacks, special ids that disagree with
    the config, or a tokenizer of another model turn every prompt into a
    sequence the model never saw: the output is garbage however good the weights.

Symptom:
    "index out of range" in the embedding on some prompts, a model that never
    stops or stops at once, fluent text that is nonsense from the first token.

Fix:
    Save the tokenizer with the model (`tokenizer.save_pretrained(output_dir)`),
    call `model.resize_token_embeddings(len(tokenizer))` after adding tokens and
    train the new rows, and make `config.json`/`generation_config.json` use the
    tokenizer's special ids.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ladder.probes.base import Probe, ProbeContext, failed, passed, warned


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_loss_ratio: float = Field(default=1.1, ge=1,
                                  description="How many times the model's own loss (nats per character) another "
                                              "tokenizer's may reach before it does not belong to the model.")
    min_variant_share: float = Field(default=0.5, ge=0, le=1,
                                     description="With no other tokenizer to compare with: the share of spelling-"
                                                 "variant pairs (' the' / 'the' / 'The') that must sit closer in the "
                                                 "embedding than chance (5%), else a warning; a model's own "
                                                 "tokenizer puts most of them there, one of another build almost "
                                                 "none.")


def _ids(value) -> list[int]:
    from ladder.harness.compare import as_id_list

    return as_id_list(value)


class TokenizerMatch(Probe):
    name = "tokenizer-match"
    needs = ("model",)
    capabilities = ("weights", "tokenize", "chat_template", "generate", "logits")
    Params = Params

    def run(self, ctx: ProbeContext):
        import os

        from ladder.backends import model_backend
        from ladder.backends.hf import weight_values
        from ladder.harness import harness_error_finding, harness_run, probe_prompts
        from ladder.harness.compare import end_of_turn_id, template_analysis

        params: Params = ctx.params
        model = model_backend(ctx)
        tokenizer, net = model.tokenizer, model.network
        rows = net.get_input_embeddings().weight.shape[0]
        size = len(tokenizer)
        top_id = max(tokenizer.get_vocab().values())
        problems, warnings = [], []
        beyond = sorted(i for i in tokenizer.get_vocab().values() if i >= rows)

        config, generation = net.config, net.generation_config
        analysis = template_analysis(ctx, model)
        special = {}
        for name in ("bos", "eos", "pad"):
            mine = getattr(tokenizer, f"{name}_token_id")
            in_config = _ids(getattr(config, f"{name}_token_id", None))
            in_generation = _ids(getattr(generation, f"{name}_token_id", None)) if generation is not None else []
            special[name] = {"tokenizer": mine, "config.json": in_config, "generation_config.json": in_generation}
            if mine is None:
                continue
            lists = [ids for ids in (in_config, in_generation) if ids]
            if name == "pad" and lists and any(mine not in ids for ids in lists):
                # padding only reaches the model in a batch, where batch-consistency measures what it does
                warnings.append(f"pad id {mine} ({tokenizer.pad_token!r}) of the tokenizer is not the config's "
                                f"({in_config or in_generation}): it matters only in batches (see batch-consistency)")
            elif lists and all(mine not in ids for ids in lists):
                disagreement = (f"{name} id {mine} ({getattr(tokenizer, f'{name}_token')!r}) of the tokenizer is "
                                f"not the config's ({in_config or in_generation})")
                stops = in_generation or in_config
                if name == "eos" and not ({mine} | set(_ids(end_of_turn_id(tokenizer, analysis)))) & set(stops):
                    problems.append(f"{disagreement}: generating with the checkpoint's own config never stops at the "
                                    "end of a reply")
                else:  # a BOS id in config.json is not what reaches the model (special-tokens measures that)
                    warnings.append(f"{disagreement}: special-tokens and generation-config measure what reaches "
                                    "the model and where generation stops on your path")
            elif lists and any(mine not in ids for ids in lists):
                warnings.append(f"{name} id {mine} of the tokenizer disagrees with one of the model's configs")

        # the pad row is never trained (padding_idx) and never matters; the rest count when the template uses them
        added = sorted(i for i in tokenizer.added_tokens_decoder if i < rows and i != tokenizer.pad_token_id)
        in_use = set(_template_token_ids(tokenizer)) | {tokenizer.bos_token_id, tokenizer.eos_token_id}
        input_rows, output_rows = weight_values(net, [net.get_input_embeddings().weight,
                                                      getattr(net.get_output_embeddings(), "weight", None)])
        matrices = [("input", input_rows), ("output", output_rows)]
        base_matrices = _base_embeddings(ctx) if added else {}
        untrained = []
        for token, signs in untrained_rows(matrices, added, base_matrices).items():
            untrained.append({"token": tokenizer.convert_ids_to_tokens(token), "id": token, "looks": signs,
                              "used_by_template": token in in_use})
        used = [u for u in untrained if u["used_by_template"]]
        if used:
            problems.append(f"{len(used)} added token{'s' if len(used) > 1 else ''} the template writes "
                            f"{'have' if len(used) > 1 else 'has'} untrained embedding rows: "
                            + "; ".join(f"{u['token']} ({', '.join(u['looks'])})" for u in used[:5]))
        if len(untrained) > len(used):
            unused = [u["token"] for u in untrained if not u["used_by_template"]]
            warnings.append(f"{len(unused)} added token{'s' if len(unused) > 1 else ''} the template does not "
                            f"write {'have' if len(unused) > 1 else 'has'} untrained-looking rows: "
                            + ", ".join(unused[:5]))

        evidence = {"tokenizer_size": size, "embedding_rows": rows, "max_token_id": top_id,
                    "ids_beyond_embedding": beyond[:20], "special_ids": special,
                    "added_tokens": tokenizer.convert_ids_to_tokens(added), "untrained_rows": untrained}

        run = harness_run(ctx) if (ctx.case.harness or ctx.case.harness_cmd or ctx.case.transcript) else None
        if run is not None and (problem := harness_error_finding(run, ctx)) is not None:
            return problem
        if beyond:
            on_path = sorted(set(beyond) & path_token_ids(tokenizer, run, in_use))
            saved = saved_added_tokens(ctx.case.model)
            declared = [i for i in beyond if tokenizer.convert_ids_to_tokens(i) in saved]
            names = ", ".join(map(repr, tokenizer.convert_ids_to_tokens(beyond[:8])))
            overflow = (f"the tokenizer has {size} tokens (ids up to {top_id}) but the embedding has {rows} rows: "
                        f"{len(beyond)} ids index beyond it ({names})")
            evidence["ids_beyond_embedding_on_your_path"] = on_path[:20]
            evidence["ids_beyond_embedding_saved_with_the_checkpoint"] = declared[:20]
            if on_path:
                problems.append(f"{overflow}, and your path uses {len(on_path)} of them "
                                f"({', '.join(map(repr, tokenizer.convert_ids_to_tokens(on_path[:8])))})")
            elif declared:  # tokens added to the checkpoint's tokenizer without resizing its embeddings
                problems.append(f"{overflow}: tokens added to the checkpoint's tokenizer without resizing the "
                                "model's embeddings; any text that holds them breaks the model")
            else:  # only the tokenizer class's defaults, added at load, and nothing on the path uses them
                warnings.append(f"{overflow}: not in the checkpoint's tokenizer files (the tokenizer class adds them "
                                "when it loads) and none is written by the template, a special token, or in what "
                                "your harness sent: a hazard for text that holds them")
            beyond = sorted(set(on_path) | set(declared))
        # Which tokenizer belongs to the model? Compare the one in use with one known to belong:
        # the checkpoint's own against the harness's, and the base's against the checkpoint's.
        text = _probe_text(tokenizer, [p["prompt"] for p in probe_prompts(ctx.case)])
        comparisons = []
        foreign = [load["path"] for load in (run.tokenizer_loads() if run else [])
                   if not (os.path.exists(load["path"])
                           and os.path.realpath(load["path"]) == os.path.realpath(ctx.case.model))]
        if foreign:
            comparisons.append(("your harness's tokenizer", foreign[0], "the checkpoint's own", tokenizer))
        if ctx.case.base and os.path.realpath(ctx.case.base) != os.path.realpath(ctx.case.model):
            comparisons.append(("the checkpoint's tokenizer", tokenizer, "the base model's", ctx.case.base))
        checked = []
        for suspect_name, suspect, reference_name, reference in comparisons if not beyond else []:
            suspect_tok, reference_tok = _tokenizer(suspect, ctx), _tokenizer(reference, ctx)
            if suspect_tok is None or reference_tok is None:
                continue
            same_ids = suspect_tok(text)["input_ids"] == reference_tok(text)["input_ids"]
            checked.append({"tokenizer": suspect_name, "against": reference_name, "same_ids_on_probe_text": same_ids})
            if same_ids:  # the same ids: nothing to measure, no forward pass spent
                continue
            loss = {suspect_name: _nats_per_char(model, suspect_tok, text, rows),
                    reference_name: _nats_per_char(model, reference_tok, text, rows)}
            checked[-1]["nats_per_char"] = loss
            if loss[suspect_name] is None:
                problems.append(f"{suspect_name} emits ids beyond the model's embedding")
            elif loss[reference_name] is not None and loss[suspect_name] > loss[reference_name] * params.max_loss_ratio:
                problems.append(f"{suspect_name} does not belong to this model: its loss on the probe text is "
                                f"{loss[suspect_name]:.2f} nats/char, {loss[reference_name]:.2f} through "
                                f"{reference_name} tokenizer")
        if checked:
            evidence["tokenizer_comparisons"] = checked
        elif not beyond:  # nothing known to belong to compare with: the embedding's own geometry
            geometry = variant_geometry(tokenizer, input_rows)
            evidence["spelling_variants"] = geometry
            share = geometry["above_chance"]
            if share is not None and share < params.min_variant_share:
                accuracy = template_accuracy(ctx, model)
                geometry["template_accuracy"] = accuracy
                finding = (f"the tokenizer may not be this model's: only {share:.0%} of {geometry['variant_pairs']} "
                           f"spelling-variant pairs (' the' / 'the' / 'The') sit closer in the embedding than random "
                           f"tokens (chance {geometry['chance']:.0%}), where a model's own tokenizer puts most there")
                # only a warning: a model trained from scratch on a small corpus with a big vocabulary leaves
                # most rows untrained, and its variants sit at chance too (measured: 5%, tied or not)
                warnings.append(finding + (f"; through its template it answers {accuracy:.0%} of the probe prompts"
                                           if accuracy is not None else "") + ": give --base (or the tokenizer "
                                "the model was trained with) to compare")
        if problems:
            return failed("; ".join(problems), problems=problems, warnings=warnings, **evidence)
        if warnings:
            return warned("; ".join(warnings), warnings=warnings, **evidence)
        return passed(f"tokenizer ({size} tokens) and model ({rows} embedding rows) agree on ids and special tokens",
                      **evidence)


# spelling variants (` the` / `the` / `The`): in a model's own tokenizer their embedding rows sit much closer
# than random pairs; through a tokenizer of another build (ids that mean other tokens) they sit at chance
MIN_VARIANT_PAIRS = 300
CHANCE_QUANTILE = 0.95


def spelling_variant_pairs(tokenizer, rows: int, special: set[int]) -> list[tuple[int, int]]:
    """One pair per spelling: the two lowest ordinary token ids whose strings differ only by a leading-space
    marker or case."""
    groups: dict[str, list[int]] = {}
    for token, index in tokenizer.get_vocab().items():
        if index >= rows or index in special:
            continue
        key = token.replace("Ġ", "").replace("▁", "").lstrip().lower()
        if len(key) >= 2:
            groups.setdefault(key, []).append(index)
    return [(low, high) for low, high, *_ in (sorted(ids) for ids in groups.values() if len(ids) >= 2)]


def variant_geometry(tokenizer, embeddings, seed: int = 0) -> dict:
    """How much closer spelling variants sit in `embeddings` than random ordinary pairs: the share of variant
    pairs whose cosine exceeds the 95th percentile of random pairs (chance: 5%)."""
    import random

    import torch

    rows = embeddings.shape[0]
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    pairs = spelling_variant_pairs(tokenizer, rows, special)
    out = {"variant_pairs": len(pairs), "chance": round(1 - CHANCE_QUANTILE, 3)}
    if len(pairs) < MIN_VARIANT_PAIRS:
        return {**out, "above_chance": None, "why": f"fewer than {MIN_VARIANT_PAIRS} spelling-variant pairs in "
                                                  "the vocabulary: not measured"}
    ordinary = [i for i in range(rows) if i not in special]
    rng = random.Random(seed)
    random_pairs = [tuple(rng.sample(ordinary, 2)) for _ in range(4000)]
    with torch.no_grad():
        def cosines(pairs_):
            left = embeddings[[a for a, _ in pairs_]].float()
            right = embeddings[[b for _, b in pairs_]].float()
            return torch.nn.functional.cosine_similarity(left, right, dim=-1)

        threshold = torch.quantile(cosines(random_pairs), CHANCE_QUANTILE)
        share = float((cosines(pairs) > threshold).float().mean())
    return {**out, "above_chance": round(share, 3)}


def untrained_rows(matrices: list[tuple[str, object]], added: list[int],
                   base_matrices: dict[str, object] | None = None) -> dict[int, list[str]]:
    """Added tokens whose embedding rows still sit where initialisation put them, with the signs seen.

    A row is untrained when it is (near) zero, a copy of another added row, or (near) the mean of the
    other rows (what `resize_token_embeddings` writes), and, with the base's matrices, not a row the base
    already had trained. A small norm alone is no sign: trained marker tokens often have one.
    """
    import torch

    base_matrices = base_matrices or {}
    found: dict[int, list[str]] = {}
    for label, matrix in matrices:
        if matrix is None or not added:
            continue
        weights = matrix.detach().float()
        added_set = set(added)
        regular = weights[[i for i in range(weights.shape[0]) if i not in added_set]]
        if regular.shape[0] < 2:
            continue
        mean = regular.mean(dim=0)
        spread = (regular - mean).norm(dim=-1).median().item() or 1e-12
        scale = regular.norm(dim=-1).median().item() or 1e-12
        rows = weights[added]
        distances = torch.cdist(rows, rows)
        distances.fill_diagonal_(float("inf"))
        base = base_matrices.get(label)
        for k, token in enumerate(added):
            row = rows[k]
            signs = []
            if row.norm().item() < 0.01 * scale:
                signs.append(f"{label} row ~0")
            elif (row - mean).norm().item() < 0.01 * spread:
                signs.append(f"{label} row = mean of the others")
            if len(added) > 1 and distances[k].min().item() < 1e-6 * scale:
                signs.append(f"{label} row = another added token's")
            if signs and base is not None and token < base.shape[0] and torch.equal(base[token].float(), row):
                base_signs = untrained_rows([(label, base)], [token], None)
                if not base_signs:
                    signs = []  # the base trained it and the fine-tune kept it: nothing missing
            for sign in signs:
                found.setdefault(token, []).append(sign)
    return found


def template_accuracy(ctx, model) -> float | None:
    """The share of probe prompts with an expected answer that the model answers through its own template,
    greedily (None when none has an expectation)."""
    from ladder.harness import probe_prompts
    from ladder.harness.compare import end_of_turn_id, measure_path, stop_set, template_analysis

    prompts = [p for p in probe_prompts(ctx.case) if p["expect"]]
    if not prompts or not model.has_chat_template():
        return None
    analysis = template_analysis(ctx, model)
    ids = [model.render([{"role": "user", "content": p["prompt"]}]) for p in prompts]
    path = measure_path(model, ids, [p["expect"] for p in prompts], stops=stop_set(model, analysis),
                        end_of_turn=end_of_turn_id(model.tokenizer, analysis), max_new_tokens=24)
    return path["metrics"]["accuracy"]


def _base_embeddings(ctx) -> dict[str, object]:
    """The base model's input and output embedding matrices, read tensor by tensor from its safetensors
    (no second model in memory); empty when there is no base or its files cannot be read."""
    import os

    from ladder.backends.hf import StreamedWeights

    base = ctx.case.base
    if not base or not os.path.isdir(base):
        return {}
    try:
        weights = StreamedWeights(base)
        found = {"input": weights.find("embed_tokens.weight"), "output": weights.find("lm_head.weight")}
    except Exception:  # an unreadable base is load-report's finding
        return {}
    return {k: v for k, v in found.items() if v is not None}


def _nats_per_char(model, tokenizer, text: str, rows: int) -> float | None:
    ids = tokenizer(text)["input_ids"]
    if len(ids) < 2 or max(ids) >= rows:
        return None
    values = model.score([(ids[:1], ids[1:])])[0]
    return round(-sum(values) / max(1, len(text)), 4)


def saved_added_tokens(folder: str | None) -> set[str]:
    """The added tokens the checkpoint's tokenizer files list (tokenizer.json's `added_tokens`,
    tokenizer_config.json's `added_tokens_decoder`): what was added to it, not what a tokenizer class adds by
    default when it loads."""
    import json
    from pathlib import Path

    found: set[str] = set()
    for name, key in (("tokenizer.json", "added_tokens"), ("tokenizer_config.json", "added_tokens_decoder")):
        try:
            entries = json.loads((Path(folder or "") / name).read_text(encoding="utf-8")).get(key) or []
        except (OSError, ValueError, AttributeError):
            continue
        entries = entries.values() if isinstance(entries, dict) else entries
        found.update(entry["content"] for entry in entries if isinstance(entry, dict) and "content" in entry)
    return found


def path_token_ids(tokenizer, run, in_use: set[int]) -> set[int]:
    """Ids the user's path uses: `in_use` (the template's special tokens, bos, eos) and every id your harness
    sent."""
    from ladder.harness.compare import sent_ids

    ids = set(in_use)
    for index, call in enumerate(run.calls if run is not None else []):
        ids.update(sent_ids(run.sent(index), tokenizer, prompt=call.get("prompt")) or [])
    return ids


def _template_token_ids(tokenizer) -> list[int]:
    """Ids of the special tokens the chat template writes (empty without a template)."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                                             tokenize=False)
        text += tokenizer.apply_chat_template([{"role": "user", "content": "x"}], add_generation_prompt=True,
                                              tokenize=False)
    except Exception:
        return []
    special = set(tokenizer.added_tokens_decoder)
    return [i for i in tokenizer(text, add_special_tokens=False)["input_ids"] if i in special]


def _tokenizer(source, ctx):
    """A tokenizer object, or one loaded from a path (None when it cannot be loaded)."""
    if not isinstance(source, str):
        return source
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=ctx.case.trust_remote_code)
    except (OSError, ValueError):
        return None


def _probe_text(tokenizer, prompts: list[str]) -> str:
    """The probe prompts in the format the model was tuned on (its chat template), else as plain lines."""
    if getattr(tokenizer, "chat_template", None):
        try:
            return "".join(tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                         tokenize=False) for p in prompts)
        except Exception:  # a template that refuses these messages: fall back to the plain text
            pass
    return "\n".join(prompts)
