"""Dumps of training batches (`input_ids` + `labels`), loaded without pickle.

Formats (see docs/data-formats.md): JSONL or JSON of objects holding `input_ids`, `labels` and
optionally `attention_mask`, each one example (a list of ids) or one batch (a list of lists);
`.npz` (read with allow_pickle=False) and `.safetensors` holding those arrays, optionally as
several batches under a common prefix (`batch0.input_ids`, `batch0.labels`, ...); `.pt` only
through `torch.load(weights_only=True)`; or a folder of such files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

IGNORE_INDEX = -100
KEYS = ("input_ids", "labels", "attention_mask")
SUFFIXES = (".jsonl", ".json", ".npz", ".safetensors", ".pt", ".pth")


class BatchError(Exception):
    """A batch dump that cannot be read; the message says which file and why."""


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # aligned with input_ids: labels[t] is the target at position t (or -100)
    attention_mask: list[int] | None
    where: str  # "file, batch b, row r"
    shifted: bool = False  # the dump held labels already shifted left by one (converted here)


def _as_list(value: Any) -> list:
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else list(value)


def examples_from_mapping(mapping: Any, where: str) -> list[Example]:
    """Examples of one batch given as a mapping with input_ids and labels (lists, arrays or tensors)."""
    if not hasattr(mapping, "keys") or "input_ids" not in mapping or "labels" not in mapping:
        keys = list(mapping.keys()) if hasattr(mapping, "keys") else type(mapping).__name__
        raise BatchError(f"{where}: needs `input_ids` and `labels`, found {keys}")
    ids, labels = _as_list(mapping["input_ids"]), _as_list(mapping["labels"])
    mask = _as_list(mapping["attention_mask"]) if mapping.get("attention_mask") is not None else None
    if ids and not isinstance(ids[0], list):
        ids, labels, mask = [ids], [labels], ([mask] if mask is not None else None)
    if len(ids) != len(labels):
        raise BatchError(f"{where}: {len(ids)} rows of input_ids but {len(labels)} rows of labels")
    out = []
    for row, (row_ids, row_labels) in enumerate(zip(ids, labels)):
        row_mask = mask[row] if mask is not None else None
        shifted = False
        if len(row_labels) == len(row_ids) - 1:  # pre-shifted labels: re-align them
            row_labels, shifted = [IGNORE_INDEX] + list(row_labels), True
        if len(row_labels) != len(row_ids) or (row_mask is not None and len(row_mask) != len(row_ids)):
            raise BatchError(f"{where}, row {row}: input_ids has {len(row_ids)} positions, labels "
                             f"{len(row_labels)}" + (f", attention_mask {len(row_mask)}" if row_mask is not None else ""))
        if not all(isinstance(t, int) for t in row_ids) or not all(isinstance(t, int) for t in row_labels):
            raise BatchError(f"{where}, row {row}: input_ids and labels must be integers")
        out.append(Example([int(t) for t in row_ids], [int(t) for t in row_labels],
                           [int(m) for m in row_mask] if row_mask is not None else None,
                           f"{where}, row {row}", shifted))
    return out


def _grouped(arrays: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Arrays keyed `input_ids`, `labels`... or `<prefix>input_ids`, `<prefix>labels`... by prefix."""
    groups: dict[str, dict[str, Any]] = {}
    for key, value in arrays.items():
        for name in KEYS:
            if key.endswith(name):
                groups.setdefault(key[: -len(name)], {})[name] = value
    if not groups:
        raise BatchError(f"no input_ids / labels arrays (found {sorted(arrays)[:8]})")
    yield from sorted(groups.items())


def _load_file(path: Path) -> list[Example]:
    name = path.name
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            return _load_json(path)
        if suffix == ".npz":
            import numpy as np

            with np.load(path, allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
        elif suffix == ".safetensors":
            from safetensors.numpy import load_file

            arrays = load_file(str(path))
        elif suffix in (".pt", ".pth"):
            import torch

            loaded = torch.load(path, map_location="cpu", weights_only=True)
            items = loaded if isinstance(loaded, list) else [loaded]
            return [e for i, item in enumerate(items) for e in examples_from_mapping(item, f"{name}, batch {i}")]
        else:
            raise BatchError(f"{name}: unknown batch format {suffix or '(no suffix)'}; use one of {', '.join(SUFFIXES)}")
    except BatchError:
        raise
    except Exception as exc:  # corrupt archives raise many kinds; all mean "cannot read this file"
        raise BatchError(f"{name}: cannot read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    out = []
    for index, (prefix, group) in enumerate(_grouped(arrays)):
        out += examples_from_mapping(group, f"{name}, batch {prefix.rstrip('._/') or index}")
    return out


def _load_json(path: Path) -> list[Example]:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        items = json.loads(text)
        return [e for i, item in enumerate(items) for e in examples_from_mapping(item, f"{path.name}, batch {i}")]
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise BatchError(f"{path.name}:{number}: not JSON ({str(exc).split(':')[0]})") from None
        out += examples_from_mapping(item, f"{path.name}:{number}")
    return out


def load_batches(path: str | Path, limit: int | None = None) -> list[Example]:
    """Examples of a batch dump (a file or a folder of files), at most `limit`."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise BatchError(f"{path}: no batch files ({', '.join(SUFFIXES)})")
    examples: list[Example] = []
    for file in files:
        examples += _load_file(file)
        if limit is not None and len(examples) >= limit:
            return examples[:limit]
    if not examples:
        raise BatchError(f"{path}: no examples in the batch dump")
    return examples
