"""What a training run recorded in its output folder (transformers Trainer layout and the like).

Read: `trainer_state.json` (top level, else the latest `checkpoint-N/`), `all_results.json` /
`train_results.json`, the checkpoint's `config.json` and `adapter_config.json`, and any other
JSON/YAML/TOML file that looks like a saved config. Never read: pickles (`training_args.bin`,
`optimizer.pt`, ...): they are listed so a probe can say it skipped them and why.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULT_FILES = ("all_results.json", "train_results.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
WEIGHT_FILES = re.compile(r"(pytorch_model|adapter_model|model)(-\d+-of-\d+)?\.bin$")
NOT_CONFIGS = {
    "trainer_state.json", "all_results.json", "train_results.json", "eval_results.json",
    "test_results.json", "predict_results.json", "config.json", "generation_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "adapter_config.json",
    "added_tokens.json", "vocab.json", "preprocessor_config.json", "model.safetensors.index.json",
    "pytorch_model.bin.index.json", "chat_template.json", "merges.txt",
}
CONFIG_SUFFIXES = (".json", ".yaml", ".yml", ".toml")


@dataclass
class RunRecord:
    root: Path
    state: dict[str, Any] = field(default_factory=dict)
    state_file: str | None = None
    results: dict[str, Any] = field(default_factory=dict)
    results_files: list[str] = field(default_factory=list)
    model_config: dict[str, Any] | None = None
    model_config_file: str | None = None
    adapter_config: dict[str, Any] | None = None
    saved_configs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    pickles: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def log_history(self) -> list[dict[str, Any]]:
        history = self.state.get("log_history")
        return [e for e in history if isinstance(e, dict)] if isinstance(history, list) else []

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of a logged scalar, in step order (e.g. `loss`, `learning_rate`)."""
        steps, values = [], []
        for entry in self.log_history:
            value, step = entry.get(key), entry.get("step")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(step, int):
                steps.append(step)
                values.append(float(value))
        return steps, values

    @property
    def has_records(self) -> bool:
        return bool(self.state or self.results or self.model_config or self.saved_configs)


def _relative(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _latest_checkpoint(root: Path) -> Path | None:
    checkpoints = []
    for child in root.glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if match and child.is_dir():
            checkpoints.append((int(match[1]), child))
    return max(checkpoints)[1] if checkpoints else None


def _read_json(path: Path, record: RunRecord) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        record.problems.append(f"{_relative(record.root, path)}: unreadable ({str(exc).splitlines()[0]})")
        return None
    if not isinstance(value, dict):
        record.problems.append(f"{_relative(record.root, path)}: not a JSON object")
        return None
    return value


def _first(record: RunRecord, name: str, places: list[Path]) -> tuple[dict | None, str | None]:
    for place in places:
        path = place / name
        if path.is_file():
            value = _read_json(path, record)
            if value is not None:
                return value, _relative(record.root, path)
    return None, None


def read_run_dir(path: str | Path) -> RunRecord:
    root = Path(path)
    record = RunRecord(root=root)
    if not root.is_dir():
        record.problems.append(f"{root} is not a folder")
        return record
    latest = _latest_checkpoint(root)
    places = [root] + ([latest] if latest else [])
    record.state, record.state_file = _first(record, "trainer_state.json", places)
    record.state = record.state or {}
    for name in RESULT_FILES:
        value = _read_json(root / name, record) if (root / name).is_file() else None
        if value:
            record.results_files.append(name)
            record.results = {**value, **record.results}
    record.model_config, record.model_config_file = _first(record, "config.json", places)
    record.adapter_config, _ = _first(record, "adapter_config.json", places)
    for place in places:
        for file in sorted(place.iterdir()):
            if not file.is_file():
                continue
            name = file.name
            if name.endswith(PICKLE_SUFFIXES) and not WEIGHT_FILES.search(name):
                record.pickles.append(_relative(root, file))
            elif place == root and name.endswith(CONFIG_SUFFIXES) and name not in NOT_CONFIGS:
                saved = _read_saved_config(file, record)
                if saved:
                    record.saved_configs.append((_relative(root, file), saved))
    return record


def _read_saved_config(path: Path, record: RunRecord) -> dict[str, Any] | None:
    from ladder.data.configfile import ConfigError, load_config

    try:
        values = load_config(path).values
    except ConfigError as exc:
        record.problems.append(str(exc))
        return None
    return values if isinstance(values, dict) else None


def logged_loss_reaching(record: RunRecord, threshold: float) -> dict[str, Any] | None:
    """Where the logged training loss first falls to `threshold` or below, with the series."""
    steps, losses = record.series("loss")
    if not steps:
        return None
    total = record.state.get("global_step") or steps[-1]
    found = next(((s, v) for s, v in zip(steps, losses) if v <= threshold), None)
    return {
        "series": {"step": steps, "loss": losses},
        "first_step": found[0] if found else None,
        "value": found[1] if found else None,
        "global_step": total,
        "final": losses[-1],
    }
