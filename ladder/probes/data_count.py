"""Rung `data-count`: the data that was loaded or consumed is not the data that was meant.

What it checks:
    Counts the training data four ways: expected (`--expect-samples`, a `num_samples`-like key
    of the training config, or a `datasets` folder's `dataset_info.json`), present on disk,
    parseable (and carrying the text field), and consumed by the run (`train_samples` in
    `all_results.json`, else estimated from `trainer_state.json`: steps per epoch times the
    batch size). It says where rows were lost: unparsable lines with their numbers, blank or
    empty rows, rows lacking the text field, missing shards, a shard glob in the config that
    matches fewer files than there are, a sample cap in the config. Formats: JSONL, JSON
    arrays, CSV/TSV, Parquet and Arrow (counted from metadata), text lines, gzip of the text
    formats; files are streamed, never loaded whole.

Why it matters:
    A loader that silently reads a tenth of the data trains a model that memorises that tenth:
    training loss falls to about zero and the model looks broken on anything else. Counting
    takes a second and rules it out before anyone studies the model.

Symptom:
    Training loss near 0 early in the run; the model recites training samples and fails on
    everything else; epochs that take far less time than the data size suggests.

Fix:
    Make the loader read every row: fix the unparsable lines, the glob or shard list, the
    sample cap, the text field name; then check that the run's steps per epoch times the
    batch size match the row count.
"""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path, PurePath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ladder.probes.base import Probe, ProbeContext, failed, passed, warned

EXPECTED_KEYS = ("num_samples", "num_train_samples", "train_samples", "n_samples", "num_examples",
                 "num_train_examples", "expected_samples", "dataset_size", "total_samples")
CAP_KEYS = ("max_samples", "max_train_samples", "max_train_examples", "sample_limit", "limit_samples")
TEXT_FIELD_KEYS = ("dataset_text_field", "text_field", "text_column", "text_column_name")
GRAD_ACCUM_KEYS = ("gradient_accumulation_steps", "grad_accum", "gradient_accumulation")
WORLD_KEYS = ("world_size", "num_processes", "num_gpus", "n_gpu", "nproc_per_node")
FILE_KEY_WORDS = ("file", "path", "data", "shard", "glob", "pattern")
EVAL_KEY_WORDS = ("eval", "valid", "test", "dev")


class DataCountParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tolerance: float = Field(default=0.01, ge=0, le=1,
                             description="Fraction of the expected rows that may be missing before the rung fails.")
    zero_loss: float = Field(default=0.05, ge=0,
                             description="A logged training loss at or below this counts as reaching ~0.")
    full_parse_mb: float = Field(default=64, ge=0,
                                 description="JSONL up to this many MB in all is parsed line by line; larger data is "
                                             "checked by structure on bytes with a sample of lines parsed per chunk "
                                             "(a chunk that looks wrong is parsed line by line).")


class DataCount(Probe):
    name = "data-count"
    needs = ("data",)
    Params = DataCountParams

    def run(self, ctx: ProbeContext):
        from ladder.data.configfile import ConfigError, first_value, load_config
        from ladder.data.rows import DataError, discover

        params: DataCountParams = ctx.params
        case = ctx.case
        notes: list[str] = []
        config = None
        if case.train_config:
            try:
                config = load_config(case.train_config)
            except ConfigError as exc:
                notes.append(f"training config not read: {exc}")
        try:
            source = discover(case.data)
        except DataError as exc:
            return failed(f"the data cannot be read: {exc}", data=case.data)

        text_field, field_source = case.text_field, "case"
        if not text_field and config is not None:
            text_field, field_source = first_value(config.values, TEXT_FIELD_KEYS, str), "training config"
        if not text_field:
            from ladder.data.rows import guess_text_field

            text_field, field_source = guess_text_field(source), "guessed"
        counts = self._count(ctx, source, text_field if field_source != "guessed" else None)
        if field_source == "guessed" and text_field:
            counts = self._count(ctx, source, text_field)

        totals = _totals(counts)
        losses = _where_lost(counts, source, text_field)
        file_problems = list(source.problems)
        if config is not None:
            file_problems += _shard_selection(config.values, source)
            cap = first_value(config.values, CAP_KEYS, int)
            if cap is not None and cap > 0 and cap < totals["parseable"]:
                losses.append({"where": "training config", "rows": totals["parseable"] - cap,
                               "what": f"the config caps the training set at {cap} rows"})
        losses += [{"where": "files", "what": p} for p in file_problems]

        expected, expected_from = _expected(case, config, source)
        usable = totals["parseable"] - totals["missing_field"] - totals["empty"]
        run = _consumed(case, config, params) if case.run_dir else None

        evidence: dict[str, Any] = {
            "expected": expected, "expected_from": expected_from,
            "present": totals["present"], "parseable": totals["parseable"], "usable": usable,
            "consumed": run["consumed"] if run else None,
            "text_field": text_field, "text_field_from": field_source if text_field else None,
            "files": [_file_evidence(c) for c in counts], "files_ignored": source.ignored[:20],
            "where_lost": losses,
        }
        if run:
            evidence["run"] = run
        if source.manifest_rows is not None:
            evidence["manifest_rows"] = source.manifest_rows
        if notes:
            evidence["notes"] = notes
        return _verdict(evidence, totals, usable, expected, run, file_problems, params)

    def _count(self, ctx, source, text_field):
        from ladder.data.rows import count_file

        total = sum(f.size for f in source.files if f.format == "jsonl")
        full_parse = total <= ctx.params.full_parse_mb * 2**20
        counts = []
        for index, file in enumerate(source.files):
            name = source.relative(file.path)
            ctx.progress(f"counting {name}", index / max(1, len(source.files)))
            counts.append(count_file(file, text_field, name=name, full_parse=full_parse))
        return counts


# ---- counting ------------------------------------------------------------------------------------


def _totals(counts) -> dict[str, int]:
    keys = ("present", "parseable", "blank", "unparsable_count", "missing_field", "empty")
    return {k: sum(getattr(c, k) for c in counts) for k in keys}


def _file_evidence(count) -> dict[str, Any]:
    out = {"file": count.file, "format": count.format, "bytes": count.bytes, "present": count.present,
           "parseable": count.parseable}
    if count.format.startswith("jsonl") and count.sampled < count.present:
        out["parsed_in_full"] = count.sampled  # the rest checked by structure (see full_parse_mb)
    for key in ("blank", "missing_field", "empty", "unparsable_count"):
        if getattr(count, key):
            out[key] = getattr(count, key)
    if count.unparsable:
        out["unparsable"] = count.unparsable
    if count.problems:
        out["problems"] = count.problems
    if count.lost:
        out["lost"] = count.lost
    if count.encoding not in ("utf-8",):
        out["encoding"] = count.encoding
    return out


def _where_lost(counts, source, text_field) -> list[dict[str, Any]]:
    lost: list[dict[str, Any]] = []
    for c in counts:
        if c.unparsable_count:
            lines = ", ".join(str(u["line"]) for u in c.unparsable)
            lost.append({"where": c.file, "rows": c.unparsable_count,
                         "what": f"{c.unparsable_count} unparsable rows (first at line {lines}: "
                                 f"{c.unparsable[0]['reason']})"})
        if c.missing_field:
            lines = ", ".join(str(n) for n in c.missing_field_lines) or "the schema"
            lost.append({"where": c.file, "rows": c.missing_field,
                         "what": f"{c.missing_field} rows lack the text field {text_field!r} (lines {lines})"})
        if c.empty:
            lines = ", ".join(str(n) for n in c.empty_lines) or "column statistics"
            lost.append({"where": c.file, "rows": c.empty,
                         "what": f"{c.empty} rows have an empty {text_field!r} (lines {lines})"})
        if c.blank:
            lost.append({"where": c.file, "rows": 0, "what": f"{c.blank} blank lines (not rows; loaders skip them)"})
        for problem in c.lost + c.problems:
            lost.append({"where": c.file, "what": problem})
    lost += _uneven_fields(counts)
    return lost


def _uneven_fields(counts) -> list[dict[str, Any]]:
    """Without a named text field: fields most rows have but some lack."""
    key_sets: dict[tuple, int] = {}
    for c in counts:
        for keys, n in c.key_sets.items():
            key_sets[keys] = key_sets.get(keys, 0) + n
    total = sum(key_sets.values())
    if not total or len(key_sets) < 2:
        return []
    having: dict[str, int] = {}
    for keys, n in key_sets.items():
        for key in keys:
            having[key] = having.get(key, 0) + n
    return [{"where": "rows", "rows": total - n, "what": f"{total - n} rows lack the field {key!r} that {n} rows have"}
            for key, n in sorted(having.items()) if total * 0.5 <= n < total]


def _shard_selection(values: dict, source) -> list[str]:
    """A glob or file list in the config that selects fewer of the data files than there are."""
    from ladder.data.configfile import leaves
    from ladder.data.rows import EXTENSIONS

    names = [source.relative(f.path) for f in source.files]
    if not names:
        return []
    problems = []
    for path, value in leaves(values):
        key = path[-1].lower()
        if not any(w in key for w in FILE_KEY_WORDS) or any(w in key for w in EVAL_KEY_WORDS):
            continue
        patterns = [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
        globs = [p for p in patterns if any(ch in p for ch in "*?[")]
        listed = [p for p in patterns if p not in globs and PurePath(p.removesuffix(".gz")).suffix in EXTENSIONS]
        dotted = ".".join(path)
        if globs:
            matched = [n for n in names if any(_glob_matches(n, source, g) for g in globs)]
            if len(matched) < len(names):
                problems.append(f"config `{dotted}`: {', '.join(map(repr, globs))} matches {len(matched)} of the "
                                f"{len(names)} data files" + (f" (not {_first_unmatched(names, matched)})"
                                                              if matched else ""))
        elif listed and len(listed) < len(names) and all(any(_same_file(n, p) for n in names) for p in listed):
            problems.append(f"config `{dotted}` names {len(listed)} of the {len(names)} data files")
    return problems


def _glob_matches(name: str, source, pattern: str) -> bool:
    full = PurePath(source.root) / name if Path(source.root).is_dir() else PurePath(source.root)
    return full.match(pattern) or fnmatch(PurePath(name).name, PurePath(pattern).name)


def _same_file(name: str, listed: str) -> bool:
    return PurePath(name).name == PurePath(listed).name


def _first_unmatched(names: list[str], matched: list[str]) -> str:
    rest = [n for n in names if n not in matched]
    return ", ".join(rest[:3]) + (" ..." if len(rest) > 3 else "")


def _expected(case, config, source) -> tuple[int | None, str | None]:
    from ladder.data.configfile import find_keys

    if case.expect_samples is not None:
        return case.expect_samples, "--expect-samples" if not case.source else "case file"
    if config is not None:
        for path, value in find_keys(config.values, EXPECTED_KEYS):
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value, f"training config `{'.'.join(path)}`"
    if source.manifest_rows is not None:
        return source.manifest_rows, source.manifest_file
    return None, None


# ---- what the run consumed -------------------------------------------------------------------------


def _consumed(case, config, params: DataCountParams) -> dict[str, Any] | None:
    from ladder.data.configfile import first_value
    from ladder.data.runlog import logged_loss_reaching, read_run_dir

    record = read_run_dir(case.run_dir)
    out: dict[str, Any] = {"consumed": None}
    if record.problems:
        out["problems"] = record.problems
    results = record.results
    if isinstance(results.get("train_samples"), int):
        out.update(consumed=results["train_samples"], exact=True,
                   how=f"train_samples in {', '.join(record.results_files)}")
    elif record.state:
        settings = [s for s in ([config.values] if config else []) + [c for _, c in record.saved_configs]]
        accumulation = next((v for s in settings if (v := first_value(s, GRAD_ACCUM_KEYS, int))), None)
        world = next((v for s in settings if (v := first_value(s, WORLD_KEYS, int))), None)
        out.update(_estimate_from_state(record, accumulation, world))
    else:
        reason = "no trainer_state.json or all_results.json in the run folder"
        if record.pickles:
            reason += f" (not read: {', '.join(record.pickles[:3])}: pickles are never loaded)"
        out["note"] = reason
    loss = logged_loss_reaching(record, params.zero_loss)
    if loss:
        out["loss"] = loss["series"]
        if loss["first_step"] is not None:
            out["loss_zero"] = {"step": loss["first_step"], "value": loss["value"], "of_steps": loss["global_step"],
                                "early": loss["first_step"] <= 0.5 * loss["global_step"]}
    return out


def _estimate_from_state(record, accumulation: int | None, world: int | None) -> dict[str, Any]:
    state = record.state
    batch = state.get("train_batch_size")
    steps = state.get("global_step")
    if not isinstance(batch, int) or not isinstance(steps, int) or batch <= 0:
        return {"note": f"{record.state_file} lacks train_batch_size or global_step"}
    steps_per_epoch = None
    for entry in reversed(record.log_history):
        epoch, step = entry.get("epoch"), entry.get("step")
        if isinstance(epoch, (int, float)) and isinstance(step, int) and epoch > 0 and step > 0:
            steps_per_epoch = step / epoch
            break
    max_steps, epochs = state.get("max_steps"), state.get("num_train_epochs")
    if steps_per_epoch is None and isinstance(max_steps, int) and isinstance(epochs, (int, float)) and epochs:
        steps_per_epoch = max_steps / epochs
    if steps_per_epoch is None:
        return {"note": f"{record.state_file} logs no epoch: steps per epoch unknown"}
    per_step = batch * (accumulation or 1) * (world or 1)
    steps_per_epoch = round(steps_per_epoch)
    distinct_steps = min(steps_per_epoch, steps)
    assumptions = []
    if accumulation is None:
        assumptions.append("gradient accumulation 1")
    if world is None:
        assumptions.append("one process")
    return {
        "consumed": distinct_steps * per_step, "exact": False,
        "how": f"{record.state_file}: {steps_per_epoch} steps per epoch x {per_step} samples per step"
               + (f" (assuming {' and '.join(assumptions)})" if assumptions else ""),
        "global_step": steps, "train_batch_size": batch, "num_train_epochs": epochs, "max_steps": max_steps,
        "steps_per_epoch": steps_per_epoch, "samples_per_step": per_step,
        "samples_trained": steps * per_step,
    }


# ---- the verdict -------------------------------------------------------------------------------------


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "n/a"


def _verdict(evidence, totals, usable, expected, run, file_problems, params):
    tol = params.tolerance
    present, parseable = totals["present"], totals["parseable"]
    reference = expected if expected is not None else parseable
    consumed = run.get("consumed") if run else None
    reasons, warnings = [], []  # reasons fail the rung; the summary already states counts

    parts = [f"parseable {parseable} of {expected} expected" if expected is not None
             else f"parseable {parseable} of {present} rows on disk"]
    if consumed is not None:
        about = "" if run.get("exact") else "about "
        parts.append(f"the run consumed {about}{consumed} ({_pct(consumed, reference)})")
    loss_zero = run.get("loss_zero") if run else None
    loss = run.get("loss") if run else None
    if loss and not loss_zero and consumed is not None and consumed < reference * (1 - tol):
        parts.append(f"training loss ended at {loss['loss'][-1]:.2f} (step {loss['step'][-1]})")
    if loss_zero:
        said = (f"training loss reached {loss_zero['value']:.2f} at step {loss_zero['step']} "
                f"of {loss_zero['of_steps']}")
        parts.append(said)
        evidence["loss_signature"] = said + (": early, " if loss_zero["early"] else ": ") + (
            "the signature of a model memorising a small slice of its data")
    summary = "; ".join(parts)

    lost_files = [f"{f['file']}: {p}" for f in evidence["files"] for p in f.get("lost", [])]
    reasons += lost_files
    if present == 0 and not lost_files:
        reasons.append("no rows")
    if expected is not None and parseable < expected * (1 - tol):
        reasons.append(f"only {parseable} of {expected} expected rows are parseable")
    if present and totals["unparsable_count"] > present * tol:
        reasons.append(f"{totals['unparsable_count']} of {present} rows are unparsable")
    elif totals["unparsable_count"]:
        warnings.append(f"{totals['unparsable_count']} unparsable rows")
    if usable < parseable:
        short = (usable < expected * (1 - tol)) if expected is not None else (parseable - usable > parseable * tol)
        (reasons if short else warnings).append(
            f"{parseable - usable} parseable rows lack the text field {evidence['text_field']!r} or have it empty")
    if consumed is not None and consumed < reference * (1 - tol):
        reasons.append(f"the run consumed {'about ' if not run.get('exact') else ''}{consumed} of "
                       f"{reference} rows")
    met = expected is not None and parseable >= expected * (1 - tol)
    (warnings if met else reasons).extend(file_problems)
    warnings += [f"{f['file']}: {p}" for f in evidence["files"] for p in f.get("problems", [])]
    if expected is not None and parseable > expected * (1 + tol):
        warnings.append(f"{parseable} rows parse but {expected} were expected")
    evidence["reasons"], evidence["warnings"] = reasons, warnings
    if reasons:
        stated = reasons[0].startswith(("only ", "the run consumed"))
        return failed(summary if stated else f"{summary}: {reasons[0]}", **evidence)
    if warnings:
        return warned(f"{summary}; {warnings[0]}", **evidence)
    if expected is None and consumed is None:
        summary += " (no expected count: give --expect-samples or --run-dir to compare)"
    return passed(summary, **evidence)
