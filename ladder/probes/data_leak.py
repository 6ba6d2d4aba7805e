"""Rung `data-leak`: duplicates inside the training data, overlap between train and eval.

What it checks:
    Hashes the normalised text of every training row (case, Unicode form and whitespace
    folded) to count exact duplicates; estimates near duplicates with MinHash over word
    n-grams and LSH banding among the first rows (a bounded sample: `near_max_rows`); and, with
    `--eval-data`, counts evaluation rows that appear in training exactly, nearly, or by their
    prompt alone (the user turns of a chat, or a prompt-like field). Memory is 8 bytes per row
    for the exact hashes plus the bounded sample.

Why it matters:
    Evaluation rows that were trained on make a memorising model look good and hide every
    other fault; heavy duplication makes the model recite the repeated rows and overweights
    them, which looks like a broken model that "only knows a few answers".

Symptom:
    Evaluation scores far above what the model does on fresh prompts; the model repeats the
    same few training answers verbatim.

Fix:
    Deduplicate the training data (exact, then near duplicates); remove from the evaluation
    set every row whose text or prompt occurs in training, or split by source before
    generating the data.
"""

from __future__ import annotations

from array import array
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ladder.probes.base import Probe, ProbeContext, failed, passed, warned

PREVIEW = 160
BANDS = 16


class DataLeakParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_duplicate_fraction: float = Field(default=0.05, ge=0, le=1,
                                          description="Share of training rows that are exact copies of another before the rung fails.")
    max_near_duplicate_fraction: float = Field(default=0.2, ge=0, le=1,
                                               description="Share of sampled rows that are near copies of another (not exact) before the rung fails.")
    max_eval_overlap_fraction: float = Field(default=0.01, ge=0, le=1,
                                             description="Share of evaluation rows found in training (exactly, nearly or by prompt) before the rung fails.")
    near_threshold: float = Field(default=0.85, gt=0, le=1,
                                  description="Estimated Jaccard similarity of word n-grams above which two rows are near duplicates.")
    near_max_rows: int = Field(default=10000, ge=0, description="Rows (of each set) sampled for near duplicates.")
    ngram: int = Field(default=3, ge=1, description="Words per n-gram.")
    permutations: int = Field(default=64, ge=BANDS, description="MinHash permutations (a multiple of 16).")


class _Set:
    """One data set, reduced: exact hashes of all rows, prompt hashes, a sample with signatures."""

    def __init__(self):
        self.hashes = array("Q")
        self.prompts = array("Q")
        self.prompt_rows = array("Q")  # row index of each prompt hash
        self.signatures: list = []
        self.previews: list[tuple[str, int, str]] = []  # (file, line, text) of sampled rows
        self.rows = 0


def _read(source, field, hasher, limit, ctx, label) -> _Set:
    from ladder.data.rows import read_rows
    from ladder.data.text import prompt_text, row_text, text_hash

    out = _Set()
    for name, row in read_rows(source):
        if row.value is None:
            continue
        text = row_text(row.value, field)
        out.hashes.append(text_hash(text))
        prompt = prompt_text(row.value)
        if prompt:
            out.prompts.append(text_hash(prompt))
            out.prompt_rows.append(out.rows)
        if out.rows < limit:
            out.signatures.append(hasher.signature(text))
            out.previews.append((name, row.line, text[:PREVIEW]))
        out.rows += 1
        if out.rows % 20000 == 0:
            ctx.progress(f"{label}: {out.rows} rows hashed", None)
    return out


def _lsh_groups(signatures, rows_per_band: int):
    """Candidate groups: row indices sharing a band of their signatures."""
    import numpy as np

    if len(signatures) < 2:
        return []
    matrix = np.stack(signatures)
    mix = np.arange(1, rows_per_band + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    groups = []
    for band in range(matrix.shape[1] // rows_per_band):
        keys = (matrix[:, band * rows_per_band:(band + 1) * rows_per_band] * mix).sum(axis=1)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        cuts = np.flatnonzero(np.diff(sorted_keys)) + 1
        for group in np.split(order, cuts):
            if len(group) > 1:
                groups.append(group)
    return groups, matrix


class _Clusters:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def _near_pairs(signatures, hashes, threshold, permutations):
    """(a, b, similarity) for sampled rows that are near but not exact copies; union-found."""
    import numpy as np

    found = _lsh_groups(signatures, permutations // BANDS)
    if not found:
        return [], 0
    groups, matrix = found
    clusters = _Clusters(len(signatures))
    pairs: dict[tuple[int, int], float] = {}
    for group in groups:
        first = int(group[0])
        for other in group[1:]:
            other = int(other)
            if hashes[first] == hashes[other]:
                continue
            similarity = float(np.mean(matrix[first] == matrix[other]))
            if similarity >= threshold:
                clusters.union(first, other)
                pairs[(first, other)] = similarity
    near_rows = {i for pair in pairs for i in pair}
    distinct_texts: dict[int, set[int]] = {}
    for i in near_rows:
        distinct_texts.setdefault(clusters.find(i), set()).add(hashes[i])
    extra = sum(len(texts) - 1 for texts in distinct_texts.values())
    return sorted(pairs.items(), key=lambda item: -item[1]), extra


class DataLeak(Probe):
    name = "data-leak"
    needs = ("data",)
    Params = DataLeakParams

    def run(self, ctx: ProbeContext):
        import numpy as np

        from ladder.data.rows import DataError, discover
        from ladder.data.text import MinHasher

        params: DataLeakParams = ctx.params
        permutations = params.permutations - params.permutations % BANDS
        hasher = MinHasher(permutations, params.ngram)
        field = ctx.case.text_field
        try:
            train_source = discover(ctx.case.data)
            eval_source = discover(ctx.case.eval_data) if ctx.case.eval_data else None
        except DataError as exc:
            return failed(f"the data cannot be read: {exc}")
        train = _read(train_source, field, hasher, params.near_max_rows, ctx, "train")
        if train.rows == 0:
            return warned("no readable training rows to compare (see data-count)", train_rows=0)
        ctx.progress("exact duplicates", 0.5)
        hashes = np.frombuffer(train.hashes, dtype=np.uint64)
        unique, counts = np.unique(hashes, return_counts=True)
        duplicate_rows = int((counts - 1).sum())
        top = unique[np.argsort(-counts, kind="stable")[:3]]
        top_counts = {int(h): int(c) for h, c in zip(unique, counts) if c > 1 and h in set(top.tolist())}
        evidence: dict[str, Any] = {
            "train_rows": train.rows, "exact_duplicate_rows": duplicate_rows,
            "exact_duplicate_fraction": round(duplicate_rows / train.rows, 4),
            "duplicate_groups": int((counts > 1).sum()),
            "duplicate_examples": _duplicate_examples(train_source, field, top_counts) if top_counts else [],
        }
        ctx.progress("near duplicates", 0.7)
        sample_hashes = [int(h) for h in train.hashes[:len(train.signatures)]]
        pairs, near_extra = _near_pairs(train.signatures, sample_hashes, params.near_threshold, permutations)
        sample = len(train.signatures)
        evidence.update(near_sample_rows=sample, near_duplicate_rows=near_extra,
                        near_duplicate_fraction=round(near_extra / sample, 4) if sample else 0.0,
                        near_threshold=params.near_threshold,
                        near_examples=[{"a": _where(train.previews[a]), "b": _where(train.previews[b]),
                                        "similarity": round(s, 3)} for (a, b), s in pairs[:3]])
        reasons, warnings = [], []
        fraction = duplicate_rows / train.rows
        if fraction > params.max_duplicate_fraction:
            reasons.append(f"{duplicate_rows} of {train.rows} training rows ({fraction:.1%}) are exact duplicates")
        elif duplicate_rows:
            warnings.append(f"{duplicate_rows} training rows are exact duplicates")
        if sample and near_extra / sample > params.max_near_duplicate_fraction:
            reasons.append(f"{near_extra} of {sample} sampled rows are near duplicates")
        elif near_extra:
            warnings.append(f"{near_extra} of {sample} sampled rows are near duplicates")

        if eval_source is not None:
            ctx.progress("train/eval overlap", 0.8)
            evaluation = _read(eval_source, field, hasher, params.near_max_rows, ctx, "eval")
            overlap = _overlap(train, evaluation, params, permutations)
            evidence["eval_overlap"] = overlap
            if evaluation.rows and overlap["rows"] / evaluation.rows > params.max_eval_overlap_fraction:
                reasons.append(f"{overlap['rows']} of {evaluation.rows} evaluation rows occur in training "
                               f"({overlap['exact']} exactly, {overlap['prompt']} by prompt, {overlap['near']} nearly)")
            elif overlap["rows"]:
                warnings.append(f"{overlap['rows']} of {evaluation.rows} evaluation rows occur in training")
        else:
            evidence["eval_overlap"] = None
            evidence["note"] = "no --eval-data: train/eval overlap not checked"
        evidence["reasons"], evidence["warnings"] = reasons, warnings
        head = (f"{train.rows} training rows: {duplicate_rows} exact duplicates, {near_extra} near duplicates "
                f"in {sample} sampled")
        if eval_source is not None:
            head += f"; {evidence['eval_overlap']['rows']} of {evidence['eval_overlap']['eval_rows']} eval rows in training"
        if reasons:
            return failed(f"{reasons[0]} ({head})", **evidence)
        if warnings:
            return warned(f"{warnings[0]} ({head})", **evidence)
        return passed(head, **evidence)


def _where(preview: tuple[str, int, str]) -> dict[str, Any]:
    return {"file": preview[0], "line": preview[1], "text": preview[2]}


def _duplicate_examples(source, field, wanted: dict[int, int]) -> list[dict[str, Any]]:
    """A second pass, stopped early: where the most repeated rows are."""
    from ladder.data.rows import read_rows
    from ladder.data.text import row_text, text_hash

    found: dict[int, dict[str, Any]] = {}
    for name, row in read_rows(source):
        if row.value is None:
            continue
        text = row_text(row.value, field)
        h = text_hash(text)
        if h not in wanted:
            continue
        entry = found.setdefault(h, {"copies": wanted[h], "text": text[:PREVIEW], "at": []})
        if len(entry["at"]) < 3:
            entry["at"].append(f"{name}:{row.line}")
        if len(found) == len(wanted) and all(len(e["at"]) >= min(3, e["copies"]) for e in found.values()):
            break
    return sorted(found.values(), key=lambda e: -e["copies"])


def _overlap(train: _Set, evaluation: _Set, params: DataLeakParams, permutations: int) -> dict[str, Any]:
    import numpy as np

    eval_hashes = np.frombuffer(evaluation.hashes, dtype=np.uint64)
    exact = np.isin(eval_hashes, np.frombuffer(train.hashes, dtype=np.uint64)) if evaluation.rows else np.zeros(0, bool)
    by_prompt = np.zeros(evaluation.rows, dtype=bool)
    if len(evaluation.prompts) and len(train.prompts):
        hit = np.isin(np.frombuffer(evaluation.prompts, dtype=np.uint64), np.frombuffer(train.prompts, dtype=np.uint64))
        by_prompt[np.frombuffer(evaluation.prompt_rows, dtype=np.uint64)[hit].astype(np.int64)] = True
    near = np.zeros(evaluation.rows, dtype=bool)
    near_examples = []
    n_train = len(train.signatures)
    if n_train and evaluation.signatures:
        found = _lsh_groups(train.signatures + evaluation.signatures, permutations // BANDS)
        if found:
            groups, matrix = found
            for group in groups:
                train_members = [int(i) for i in group if i < n_train]
                if not train_members:
                    continue
                for member in group:
                    member = int(member)
                    if member < n_train or near[member - n_train] or exact[member - n_train]:
                        continue
                    similarity = float(np.mean(matrix[member] == matrix[train_members[0]]))
                    if similarity >= params.near_threshold:
                        near[member - n_train] = True
                        if len(near_examples) < 3:
                            near_examples.append({"eval": _where(evaluation.previews[member - n_train]),
                                                  "train": _where(train.previews[train_members[0]]),
                                                  "similarity": round(similarity, 3)})
    any_overlap = exact | by_prompt | near
    examples = [{"eval": _where(evaluation.previews[i]), "how": "exact" if exact[i] else "prompt"}
                for i in np.flatnonzero(exact | by_prompt)[:3] if i < len(evaluation.previews)]
    return {"eval_rows": evaluation.rows, "rows": int(any_overlap.sum()), "exact": int(exact.sum()),
            "prompt": int((by_prompt & ~exact).sum()), "near": int((near & ~exact & ~by_prompt).sum()),
            "fraction": round(float(any_overlap.mean()), 4) if evaluation.rows else 0.0,
            "examples": examples + near_examples}
