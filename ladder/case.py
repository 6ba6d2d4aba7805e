"""The case: what is being debugged, from `ladder.case.yaml` and/or command-line flags.

Paths in a case file are relative to that file; paths given as flags are relative
to the working directory. Flags override the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ladder.errors import InputError, Problem
from ladder.yamlpos import load_yaml_mapping, position_of


_MEMORY_ITEM = r"\s*(cpu|mps|\d+)\s*=\s*\d+(\.\d+)?\s*[KMGT]i?B\s*"
MAX_MEMORY_PATTERN = rf"^{_MEMORY_ITEM}(,{_MEMORY_ITEM})*$"


def max_memory_map(spec: str) -> dict[int | str, str]:
    """`0=20GiB,cpu=48GiB` as accelerate's `max_memory` ({0: "20GiB", "cpu": "48GiB"})."""
    found: dict[int | str, str] = {}
    for item in spec.split(","):
        device, _, size = (part.strip() for part in item.partition("="))
        found[int(device) if device.isdigit() else device] = size.replace(" ", "")
    return found


class ProbePrompt(BaseModel):
    """A prompt of the user's own, with an optional expected answer."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="What to ask, as a user message (no template applied).")
    expect: str | None = Field(default=None, description="Regular expression a correct answer matches.")


class Case(BaseModel):
    """What ladder is pointed at. Every input is optional; rungs lacking theirs skip."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(default=None, description="Free text: what this case is.")
    model: str | None = Field(default=None, description="The model under test: a folder loadable by transformers, "
                                                    "or a .gguf file (dequantized by transformers).")
    base: str | None = Field(default=None, description="The base model the fine-tune started from.")
    harness: str | None = Field(default=None,
                                description="The user's test code: `file.py:function` or `module:function` (`file.py:object.method` too), called with one prompt.")
    harness_cmd: str | None = Field(default=None,
                                    description="A shell command that prompts the model; `{prompt}` is replaced by the quoted prompt "
                                                "(without it, the prompt is written to the command's stdin).")
    harness_model: str | None = Field(default=None,
                                      description="The checkpoint your harness loads, when it is not `model` (a sweep "
                                                  "swaps checkpoints): the harness's loads of it get `model` instead.")
    transcript: str | None = Field(default=None,
                                   description="JSONL of what a harness sent and received (see docs/transcript.md).")
    data: str | None = Field(default=None, description="Training data: a file or a folder of shards.")
    eval_data: str | None = Field(default=None, description="Evaluation data: a file or a folder.")
    expect_samples: int | None = Field(default=None, ge=0, description="How many training samples were meant to be used.")
    train_config: str | None = Field(default=None, description="The training configuration (YAML, JSON or TOML).")
    config_schema: str | None = Field(default=None,
                                      description="Where the training config's keys are consumed: `file.py:Name`.")
    run_dir: str | None = Field(default=None, description="The training run's output folder (trainer_state.json ...).")
    batches: str | None = Field(default=None, description="A dump of training batches (input_ids + labels).")
    collator: str | None = Field(default=None, description="The user's collator, `file.py:function`.")
    text_field: str | None = Field(default=None, description="Name of the text field in the training data.")
    prompts: list[ProbePrompt] = Field(default_factory=list, description="Probe prompts with expected answers.")
    trust_remote_code: bool = Field(default=False, description="Allow models with custom code to load.")
    device: str | None = Field(default=None,
                               description="torch device for ladder's own model loads: auto (shards over the GPUs with "
                                           "accelerate when there are any, else cpu), cpu, cuda, cuda:N (default: cpu).")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] | None = Field(default=None,
                              description="dtype of ladder's own model loads (default: auto, the checkpoint's).")
    max_memory: str | None = Field(default=None,
                                   description="The most memory each device may hold of ladder's own loads, "
                                               "`DEVICE=SIZE,...` (`0=20GiB,cpu=48GiB`): the model is sharded over "
                                               "them with accelerate (`device_map=\"auto\"`) and what does not "
                                               "fit is offloaded to disk.")
    harness_timeout: float = Field(default=300.0, gt=0, description="Seconds a harness gets for one prompt.")
    endpoint: str | None = Field(default=None, pattern=r"^https?://",
                                 description="An OpenAI-compatible server serving the model: `http://HOST:PORT/v1`.")
    served_model: str | None = Field(default=None,
                                     description="The model name to request from `endpoint` (default: the one it lists).")
    api_key_env: str | None = Field(default=None,
                                    description="The environment variable that holds the endpoint's API key (never recorded).")

    @field_validator("max_memory")
    @classmethod
    def _memory_spec(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(MAX_MEMORY_PATTERN, value):
            raise ValueError(f"{value!r} is not DEVICE=SIZE,...: give e.g. 0=20GiB,cpu=48GiB (devices: a GPU "
                             "index, cpu or mps; sizes in KB, MB, GB, TB or KiB ... TiB)")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError(f"{value!r} is not a device: give auto, cpu, cuda, cuda:N or mps")
        return value

    # where the case came from; not part of the file format
    source: str | None = Field(default=None, exclude=True)


PATH_KEYS = ("model", "base", "harness_model", "data", "eval_data", "train_config", "run_dir", "batches", "transcript")
CALLABLE_KEYS = ("harness", "collator", "config_schema")  # `file.py:name` or `module:name`

# need -> (case keys any of which satisfies it, how to give it)
NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "model": (("model",), "--model PATH (case key `model`)"),
    "base": (("base",), "--base PATH (case key `base`)"),
    "harness": (("harness", "harness_cmd", "transcript"),
                "--harness FILE.py:FUNC, --harness-cmd CMD or --transcript F.jsonl (case keys `harness`, `harness_cmd`, `transcript`)"),
    "runnable-harness": (("harness", "harness_cmd"),
                         "--harness FILE.py:FUNC or --harness-cmd CMD (case keys `harness`, `harness_cmd`)"),
    "data": (("data",), "--data PATH (case key `data`)"),
    "eval-data": (("eval_data",), "--eval-data PATH (case key `eval_data`)"),
    "train-config": (("train_config",), "--train-config FILE (case key `train_config`)"),
    "run-dir": (("run_dir",), "--run-dir DIR (case key `run_dir`)"),
    "endpoint": (("endpoint",), "--endpoint URL (case key `endpoint`)"),
    "labels": (("batches", "collator"),
               "--batches FILE or --collator FILE.py:FUNC (case keys `batches`, `collator`)"),
}


def missing_input(case: Case, need: str) -> str | None:
    """None when the case satisfies `need`, else the flag or case key that would."""
    keys, hint = NEEDS[need]
    if any(getattr(case, key) not in (None, "", []) for key in keys):
        return None
    return hint


def _resolve(value: str, base_dir: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def _resolve_model(value: str, base_dir: Path) -> str:
    """A model path, or a hub id (`org/name`) that is not a folder here: its snapshot in the local hub cache
    (never fetched; left unresolved, the path check names it)."""
    path = _resolve(value, base_dir)
    if Path(path).exists() or not HUB_ID.fullmatch(value):
        return path
    from ladder.backends.hf import local_checkpoint

    return local_checkpoint(value) or path


def _resolve_callable(value: str, base_dir: Path) -> str:
    """`file.py:func` gets its file resolved; `module:func` stays as it is."""
    target, sep, name = value.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{_resolve(target, base_dir)}:{name}"
    return value


MODEL_KEYS = ("model", "base", "harness_model")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def resolve_paths(values: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    out = dict(values)
    for key in PATH_KEYS:
        if isinstance(out.get(key), str) and out[key]:
            out[key] = _resolve(out[key], base_dir) if key not in MODEL_KEYS else _resolve_model(out[key], base_dir)
    for key in CALLABLE_KEYS:
        if isinstance(out.get(key), str) and out[key]:
            out[key] = _resolve_callable(out[key], base_dir)
    return out


def _validation_problems(exc: ValidationError, file: str | None, positions=None) -> list[Problem]:
    from ladder.loader import plain_words  # shared wording of pydantic errors

    problems = []
    for error in exc.errors():
        location = tuple(error["loc"])
        line, col = position_of(positions, location) if positions else (None, None)
        problems.append(Problem(plain_words(error, Case), file, line, col))
    return problems


def load_case(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Case:
    """Read a case file (if any), resolve its paths, apply flag overrides, check that inputs exist."""
    values: dict[str, Any] = {}
    source = None
    if path is not None:
        case_path = Path(path)
        data, positions = load_yaml_mapping(case_path, "case file")
        source = str(case_path)
        try:
            Case.model_validate(data)
        except ValidationError as exc:
            raise InputError(_validation_problems(exc, source, positions)) from None
        values = resolve_paths(data, case_path.resolve().parent)
    flag_values = {k: v for k, v in (overrides or {}).items() if v not in (None, [], ())}
    values.update(resolve_paths(flag_values, Path.cwd()))
    try:
        case = Case.model_validate({**values, "source": source})
    except ValidationError as exc:
        raise InputError(_validation_problems(exc, source)) from None
    check_paths_exist(case)
    return case


def check_paths_exist(case: Case) -> None:
    """Every path the case names must exist: a typo is bad input, not a skipped rung."""
    problems = []
    for key in PATH_KEYS:
        value = getattr(case, key)
        if value and not Path(value).exists():
            hub = (" (a hub id such as org/name is read from the local hub cache only: ladder never downloads)"
                   if key in MODEL_KEYS else "")
            problems.append(Problem(f"{key.replace('_', '-')}: {value} does not exist{hub}", case.source))
    for key in ("harness", "collator", "config_schema"):
        value = getattr(case, key)
        if not value:
            continue
        target, sep, name = value.rpartition(":")
        if not sep or not name:
            problems.append(Problem(f"{key.replace('_', '-')}: {value!r} must be FILE.py:NAME or module:NAME",
                                    case.source))
        elif target.endswith(".py") and not Path(target).is_file():
            problems.append(Problem(f"{key.replace('_', '-')}: {target} does not exist", case.source))
    if case.transcript and Path(case.transcript).is_file():  # unreadable lines are bad input, not a rung error
        from ladder.harness.run import read_transcript

        unreadable = read_transcript(case.transcript).error
        if unreadable:
            problems.append(Problem(f"transcript: {unreadable['message']} (the format: docs/transcript.md)",
                                    case.source))
    if case.harness_cmd is not None and not case.harness_cmd.strip():
        problems.append(Problem("harness-cmd is empty: give the command that prompts the model", case.source))
    for key in ("model", "base"):
        problems += _adapter_problems(key, getattr(case, key), case.source)
    if problems:
        raise InputError(problems)


def _adapter_problems(key: str, path: str | None, source: Any) -> list[Problem]:
    """A LoRA adapter folder given as a model is loaded as its base with the adapter merged: its base must be
    here and the adapter a kind ladder merges (bad input, not a rung error)."""
    from ladder.adapters import AdapterError, adapter_to_merge

    try:
        adapter_to_merge(path)
    except AdapterError as exc:
        return [Problem(f"{key}: {exc}", source)]
    return []


def describe_case(case: Case) -> dict[str, Any]:
    """The case as the report shows it (set fields only)."""
    return case.model_dump(mode="json", exclude_defaults=True)
