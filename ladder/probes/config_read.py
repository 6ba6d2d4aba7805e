"""Rung `config-read`: a configured value was never read, or was overridden.

What it checks:
    Reads the training config (`--train-config`, YAML, JSON or TOML) and checks it against
    what consumed it. With `--config-schema` (a dataclass such as `transformers:TrainingArguments`,
    a pydantic model, or an argparse parser or a function returning one) it finds keys the
    consumer does not know (with the nearest known key: `learning_rat` -> `learning_rate`)
    and values of the wrong type (`2e-4` read by YAML as text). With `--run-dir` it compares
    what the config intended with what the run recorded: the learning rate logged per step in
    `trainer_state.json` against the configured peak and schedule, per parameter group where
    logged; batch size, epochs and step counts; a saved effective config (JSON/YAML/TOML); the
    checkpoint's `config.json` and `adapter_config.json`. Pickles (`training_args.bin`,
    `optimizer.pt`) are never loaded; when they are the only record, that part is skipped.

Why it matters:
    A misspelled key is silently ignored by most loaders: the run trains with the default
    (a learning rate of 5e-05 instead of 2e-4, the wrong layers, no LoRA on the intended
    modules) and the model looks broken when the config was simply not read.

Symptom:
    A fine-tune that barely moved from its base, or moved far more than intended; a learning
    rate curve in the logs that does not match the config; a config change that changes nothing.

Fix:
    Rename the unknown keys to the ones the consumer reads, give values their declared types
    (write floats with a dot in YAML: 2.0e-4), and rerun; compare the logged learning rate
    with the configured one before training long.
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ladder.probes.base import Probe, ProbeContext, failed, passed, skip, warned

LR_KEYS = ("learning_rate", "lr")
GROUP_LR = re.compile(r"^(?:learning_rate|lr)[/_\-.](?:(?:param_)?groups?[/_\-.]?)?(?P<group>[\w./-]+)$")
LAYER_KEYS = ("trainable_layers", "layers_to_train", "train_layers", "unfreeze_layers", "trainable_modules",
              "layers_to_transform", "modules_to_train")
STATE_KEYS = {  # trainer_state.json key -> config keys that set it
    "train_batch_size": ("per_device_train_batch_size", "train_batch_size", "batch_size"),
    "num_train_epochs": ("num_train_epochs", "num_epochs", "epochs"),
    "max_steps": ("max_steps",),
    "logging_steps": ("logging_steps",),
    "eval_steps": ("eval_steps",),
    "save_steps": ("save_steps",),
}
# step counts the Trainer takes as a share of max_steps when below 1
RATIO_STEP_KEYS = ("logging_steps", "eval_steps", "save_steps")
ADAPTER_ALIASES = {"lora_r": "r", "r": "r", "lora_alpha": "lora_alpha", "alpha": "lora_alpha",
                   "lora_dropout": "lora_dropout", "target_modules": "target_modules"}


class ConfigReadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    section: str | None = Field(default=None, description="Dotted path of the config section the schema consumes "
                                                          "(default: found by matching keys).")
    lr_tolerance: float = Field(default=0.1, ge=0,
                                description="Relative difference between logged and intended learning rate allowed.")


class ConfigRead(Probe):
    name = "config-read"
    needs = ("train-config",)
    Params = ConfigReadParams

    def run(self, ctx: ProbeContext):
        from ladder.data.configfile import ConfigError, load_config

        params: ConfigReadParams = ctx.params
        case = ctx.case
        if not case.config_schema and not case.run_dir:
            skip("needs where the config is consumed: --config-schema FILE.py:NAME or --run-dir DIR "
                 "(case keys `config_schema`, `run_dir`)")
        try:
            config = load_config(case.train_config)
        except ConfigError as exc:
            return warned(f"cannot read the training config: {exc}", train_config=case.train_config)
        table: list[dict[str, Any]] = []
        notes: list[str] = []
        values = config.values
        intended: dict[str, Any] = {}  # consumer key -> value the config meant
        schema = None
        if case.config_schema:
            from ladder.data.pyref import LoadError, load_object
            from ladder.data.schema import SchemaError, schema_of

            ctx.progress("reading the schema", 0.1)
            try:
                schema = schema_of(load_object(case.config_schema))
            except (LoadError, SchemaError) as exc:
                return warned(f"cannot read the config schema {case.config_schema}: {exc}")
            values, section = _section(values, schema, params.section)
            if section:
                notes.append(f"checked section `{section}` of the config against {schema.name}")
            _check_schema(values, schema, config, (section,) if section else (), table, intended)
        else:
            intended = {path[-1]: value for path, value in _leaves(values)}
        if case.run_dir:
            ctx.progress("reading the run folder", 0.5)
            _check_run(case.run_dir, values, intended, schema, params, table, notes)
        compared = [row for row in table if row["status"] != "unread"]
        if not compared:
            skip("nothing to compare the config with: " + ("; ".join(notes) if notes else
                 "give --config-schema, or a --run-dir with trainer_state.json or a saved config"),
                 notes=notes)
        bad = [row for row in table if row["status"] in ("unknown", "wrong-type", "differs")]
        doubtful = [row for row in table if row["status"] == "doubtful"]
        evidence = {"table": table, "columns": ["key", "in_file", "in_effect", "note"], "notes": notes,
                    "schema": schema.name if schema else None, "checked": len(compared)}
        if bad:
            counts = {s: sum(1 for r in bad if r["status"] == s) for s in ("unknown", "wrong-type", "differs")}
            said = ", ".join(f"{n} {s.replace('-', ' ')}" for s, n in counts.items() if n)
            first = bad[0]
            return failed(f"{said}: `{first['key']}` {first['note']}", **evidence)
        if doubtful:
            return warned(f"`{doubtful[0]['key']}` {doubtful[0]['note']}", **evidence)
        return passed(f"{len(compared)} config values checked: all known, typed and in effect", **evidence)


# ---- the schema ------------------------------------------------------------------------------------


def _leaves(values: dict, prefix: tuple = ()):
    from ladder.data.configfile import leaves

    return leaves(values, prefix)


def _section(values: dict, schema, wanted: str | None) -> tuple[dict, str | None]:
    """The part of the config the schema consumes: `wanted`, the top level, or the best-matching section."""
    if wanted:
        current: Any = values
        for part in wanted.split("."):
            current = current.get(part) if isinstance(current, dict) else None
        return (current, wanted) if isinstance(current, dict) else (values, None)
    top = sum(1 for k in values if schema.lookup(str(k)))
    best, best_score = None, top
    for key, value in values.items():
        if isinstance(value, dict) and value and not schema.lookup(str(key)):
            score = sum(1 for k in value if schema.lookup(str(k)))
            if score > best_score and score >= len(value) / 2:
                best, best_score = key, score
    return (values[best], str(best)) if best is not None else (values, None)


def _check_schema(values: dict, schema, config, prefix: tuple, table: list, intended: dict) -> None:
    from ladder.data.schema import type_problem

    known = list(schema.fields) + list(schema.aliases)
    for key, value in values.items():
        key = str(key)
        path = (*prefix, key)
        where = _line(config, path)
        entry = schema.lookup(key)
        if entry is None:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
            note = f"is not a key of {schema.name}: ignored, its default is used"
            if close:
                target = schema.aliases.get(close[0], close[0])
                default = schema.fields[target].default
                note = (f"is not a key of {schema.name} (did you mean `{close[0]}`?): ignored"
                        + (f", so {close[0]} = {_show(default)} (the default)" if _has(default) else ""))
                intended.setdefault(target, value)
            table.append(_row(".".join(path), value, "(ignored)", note + where, "unknown"))
            continue
        intended[entry.name] = value
        if entry.nested is not None and isinstance(value, dict):
            _check_schema(value, entry.nested, config, path, table, {})
            continue
        problem = type_problem(value, entry.annotation)
        if problem:
            table.append(_row(".".join(path), value, None, problem + where, "wrong-type"))
        else:
            table.append(_row(".".join(path), value, value, f"known to {schema.name}", "ok"))


def _has(default) -> bool:
    from ladder.data.schema import MISSING

    return default is not MISSING


def _line(config, path: tuple) -> str:
    line = config.line_of(path)
    return f" ({config.path.name}:{line})" if line else ""


def _row(key: str, in_file: Any, in_effect: Any, note: str, status: str) -> dict[str, Any]:
    return {"key": key, "in_file": _show(in_file), "in_effect": _show(in_effect), "note": note, "status": status}


def _show(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---- the run ---------------------------------------------------------------------------------------


def _check_run(run_dir, values, intended, schema, params, table, notes) -> None:
    from ladder.data.runlog import read_run_dir

    record = read_run_dir(run_dir)
    notes.extend(record.problems)
    if not record.has_records:
        if record.pickles:
            notes.append(f"the run folder's only records are pickles ({', '.join(record.pickles[:4])}): "
                         "never loaded, so intended vs effective is not checked; save trainer_state.json "
                         "or the effective config as JSON/YAML")
            table.append(_row("(run records)", None, None, notes[-1], "unread"))
        else:
            notes.append("the run folder has no trainer_state.json, saved config, or config.json")
        return
    if record.pickles:
        notes.append(f"not loaded (pickles): {', '.join(record.pickles[:4])}")
    if record.state:
        _check_learning_rate(record, intended, schema, params, table)
        _check_group_rates(record, values, table)
        _check_state_counts(record, intended, table)
    for name, saved in record.saved_configs:
        _compare_saved(name, saved, values, intended, schema, table)
    if record.model_config:
        _compare_by_name(values, record.model_config, record.model_config_file, table)
    if record.adapter_config:
        _compare_adapter(values, record.adapter_config, table)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _schedule_factor(kind: str, step: int, total: int, warmup: float) -> float | None:
    """transformers' schedule multipliers (linear, cosine, constant, constant_with_warmup)."""
    warm = math.ceil(warmup * total) if 0 < warmup < 1 else int(warmup)
    if step < warm:
        return step / max(1, warm)
    if kind in ("constant", "constant_with_warmup"):
        return 1.0
    progress = (step - warm) / max(1, total - warm)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    if kind == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return None


def _configured_rate(intended: dict) -> tuple[str | None, Any]:
    """(config key, value) of the intended learning rate; a near spelling counts when no exact key exists."""
    for key in LR_KEYS:
        if key in intended:
            return key, intended[key]
    close = difflib.get_close_matches("learning_rate", [k for k in intended if isinstance(k, str)], n=1, cutoff=0.75)
    return (close[0], intended[close[0]]) if close else (None, None)


def _check_learning_rate(record, intended, schema, params, table) -> None:
    steps, rates = record.series("learning_rate")
    if not steps:
        return
    peak = max(rates)
    key, configured = _configured_rate(intended)
    default = schema.fields["learning_rate"].default if schema and "learning_rate" in schema.fields else None
    default = _number(default) if default is not None else None
    value = _number(configured)
    where = f"peak of {len(steps)} logged steps in {record.state_file}"
    if value is None:
        if default is not None and _close(peak, default, params.lr_tolerance):
            table.append(_row("learning_rate", None, peak, f"not set in the config; the run used the default "
                                                           f"{default:g} ({where})", "ok"))
        return
    misspelled = key not in LR_KEYS
    label = key if not misspelled else f"{key} (read as learning_rate?)"
    total = record.state.get("max_steps") or record.state.get("global_step") or steps[-1]
    kind = str(intended.get("lr_scheduler_type", "linear")).lower().split(".")[-1]
    warmup = _number(intended.get("warmup_steps", intended.get("warmup_ratio", 0))) or 0.0
    factors = [_schedule_factor(kind, s, total, warmup) for s in steps]
    ratios = sorted(r / (value * f) for r, f in zip(rates, factors) if f)
    # the series follows the configured schedule when rate / (value x factor) is about constant
    known_schedule = (bool(ratios) and all(f is not None for f in factors)
                      and _close(ratios[len(ratios) // 4], ratios[3 * len(ratios) // 4], params.lr_tolerance))
    base = value * ratios[len(ratios) // 2] if known_schedule else peak  # the rate the run really started from
    why = ""
    if default is not None and _close(base, default, params.lr_tolerance) and not _close(value, default, params.lr_tolerance):
        why = f": that is the default of {schema.name} ({default:g}), so the configured value was never read"
    elif misspelled:
        why = f": `{key}` is not `learning_rate`, so it was likely never read"
    if peak > value * (1 + params.lr_tolerance) or (known_schedule and not _close(base, value, params.lr_tolerance)):
        shape = f"a {kind} schedule from {base:.3g}" if known_schedule else f"a peak of {peak:.3g}"
        table.append(_row(label, configured, peak, f"configured {value:g}, the run logged {shape} ({where}){why}",
                          "differs"))
    elif peak < value * 0.5:
        table.append(_row(label, configured, peak, f"logged peak is under half the configured rate ({where}; "
                                                   f"schedule {kind} unknown){why}", "doubtful"))
    else:
        table.append(_row(label, configured, peak, f"in effect ({where}, {kind} schedule)", "ok"))


def _close(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance * max(abs(a), abs(b), 1e-30)


def _check_group_rates(record, values, table) -> None:
    groups: dict[str, list[float]] = {}
    for entry in record.log_history:
        for key, value in entry.items():
            match = GROUP_LR.match(key)
            if match and isinstance(value, (int, float)):
                groups.setdefault(match["group"], []).append(float(value))
    if len(groups) < 1:
        return
    from ladder.data.configfile import find_keys

    layers = [v for _, v in find_keys(values, LAYER_KEYS)]
    named = [str(x) for v in layers for x in (v if isinstance(v, list) else [v])]
    for group, rates in sorted(groups.items()):
        frozen = all(r == 0 for r in rates)
        meant = [n for n in named if n and (n in group or group in n)]
        if frozen and (meant or any(any(r > 0 for r in other) for other in groups.values())):
            note = f"param group {group!r}: learning rate 0 at all {len(rates)} logged steps, its parameters never trained"
            if meant:
                note += f" (the config names {', '.join(meant)} to train)"
            table.append(_row(f"learning_rate[{group}]", _show(named) if named else None, 0.0, note, "differs"))
        else:
            table.append(_row(f"learning_rate[{group}]", None, max(rates), "param group trained", "ok"))


def _check_state_counts(record, intended, table) -> None:
    state = record.state
    max_steps_set = (_number(intended.get("max_steps")) or 0) > 0
    for state_key, config_keys in STATE_KEYS.items():
        effective = state.get(state_key)
        configured_key = next((k for k in config_keys if k in intended), None)
        if configured_key is None or effective is None:
            continue
        if state_key == "num_train_epochs" and max_steps_set:
            continue  # max_steps decides; the trainer recomputes epochs
        if state_key == "max_steps" and not max_steps_set:
            continue
        configured = _number(intended[configured_key])
        if configured is None or _number(effective) is None:
            continue
        note = f"trainer_state.json {state_key}"
        total = _number(state.get("max_steps"))
        if state_key in RATIO_STEP_KEYS and 0 < configured < 1 and total:
            # the Trainer reads a value below 1 as a share of the run's steps: ceil(max_steps x ratio)
            expected = math.ceil(total * configured)
            status = "ok" if _number(effective) == expected else "differs"
            table.append(_row(configured_key, intended[configured_key], effective,
                              f"{note}: {configured:g} of {total:g} steps is {expected}"
                              + ("" if status == "ok" else f", but the run used {effective}"), status))
        elif state_key == "train_batch_size" and effective % max(1, configured) == 0 and effective != configured:
            table.append(_row(configured_key, intended[configured_key], effective,
                              f"{note}: {int(effective // configured)} devices x {configured:g}", "ok"))
        elif _number(effective) != configured:
            table.append(_row(configured_key, intended[configured_key], effective,
                              f"is {intended[configured_key]!r} in the config, but the run used {effective!r} "
                              f"({note})", "differs"))
        else:
            table.append(_row(configured_key, intended[configured_key], effective, note, "ok"))


def _compare_saved(name, saved, values, intended, schema, table) -> None:
    saved_leaves: dict[str, list[Any]] = {}
    for path, value in _leaves(saved):
        saved_leaves.setdefault(path[-1], []).append(value)
    own = list(_leaves(values))
    shared = [p for p, _ in own if p[-1] in saved_leaves]
    if not own or len(shared) < max(1, len(own) // 3):
        return  # not a record of this config
    for path, value in own:
        key = ".".join(path)
        if path[-1] not in saved_leaves:
            if schema is None:
                close = difflib.get_close_matches(path[-1], list(saved_leaves), n=1, cutoff=0.75)
                hint = f" (did you mean `{close[0]}`? the run has {close[0]} = {_show(saved_leaves[close[0]][0])})" \
                    if close else ""
                table.append(_row(key, value, "(absent)", f"not in the run's recorded config {name}{hint}", "unknown"))
            continue
        recorded = saved_leaves[path[-1]]
        if len(recorded) != 1:
            continue
        if _same(value, recorded[0]):
            table.append(_row(key, value, recorded[0], f"as recorded in {name}", "ok"))
        else:
            table.append(_row(key, value, recorded[0], f"{name} records another value", "differs"))


def _same(a: Any, b: Any) -> bool:
    x, y = _number(a), _number(b)
    if x is not None and y is not None and not isinstance(a, str) and not isinstance(b, str):
        return _close(x, y, 1e-6)
    if isinstance(a, list) and isinstance(b, list):
        return sorted(map(str, a)) == sorted(map(str, b))
    return a == b or str(a) == str(b)


def _compare_by_name(values, model_config: dict, source: str, table) -> None:
    flat = {k: v for k, v in model_config.items() if not isinstance(v, dict)}
    for path, value in _leaves(values):
        if path[-1] in flat and path[-1] not in ("model_type", "architectures", "_name_or_path"):
            recorded = flat[path[-1]]
            status = "ok" if _same(value, recorded) else "differs"
            table.append(_row(".".join(path), value, recorded, f"checkpoint {source}", status))


def _compare_adapter(values, adapter: dict, table) -> None:
    for path, value in _leaves(values):
        target = ADAPTER_ALIASES.get(path[-1])
        if target and target in adapter:
            status = "ok" if _same(value, adapter[target]) else "differs"
            table.append(_row(".".join(path), value, adapter[target], f"adapter_config.json {target}", status))
