"""Helpers for the data and config rung tests: run one rung through the real runner, write
training-run folders and data files in the formats trainers really write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ladder.case import Case
from ladder.loader import Ladder
from ladder.models import RungResult
from ladder.registry import ProbeRegistry
from ladder.runner import Runner


def run_rung(probe: str, params: dict | None = None, **case: Any) -> RungResult:
    """The result of one rung whose probe is `probe`, walked by the real runner on `case`."""
    registry = ProbeRegistry()
    probe_class = registry.get(probe)
    from ladder.models import Rung

    rung = Rung(id=probe, title=probe, tier="data", probe=probe, params=params or {}, why="w", fix="f")
    ladder_ = Ladder(name="one", description="", source="test", rungs=[rung], order=[probe])
    values = {k: (str(v) if isinstance(v, Path) else v) for k, v in case.items()}
    report = Runner(ladder_, Case(**values), registry=registry).run()
    result = report.rungs[0]
    assert result.status.value != "error", result.traceback or result.summary
    assert probe_class is not None
    return result


def write_jsonl(path: Path, rows: list[dict], extra_lines: list[str] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
        for line in extra_lines:
            handle.write(line + "\n")
    return path


def chat_rows(n: int, start: int = 0) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"What is {i} plus {i + 1}?"},
                          {"role": "assistant", "content": str(2 * i + 1)}]} for i in range(start, start + n)]


def write_trainer_state(run_dir: Path, *, global_step: int, batch: int, epochs: float,
                        steps_per_epoch: int, loss: list[float] | None = None, lr: list[float] | None = None,
                        extra_logs: list[dict] | None = None, logging_steps: int = 10) -> Path:
    """A `trainer_state.json` as transformers' Trainer writes it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    history = []
    for index, step in enumerate(range(logging_steps, global_step + 1, logging_steps)):
        entry: dict[str, Any] = {"step": step, "epoch": round(step / steps_per_epoch, 4)}
        if loss is not None:
            entry["loss"] = loss[min(index, len(loss) - 1)]
        if lr is not None:
            entry["learning_rate"] = lr[min(index, len(lr) - 1)]
        if extra_logs:
            entry.update(extra_logs[min(index, len(extra_logs) - 1)])
        entry["grad_norm"] = 1.0
        history.append(entry)
    state = {"best_metric": None, "epoch": global_step / steps_per_epoch, "global_step": global_step,
             "is_local_process_zero": True, "log_history": history, "logging_steps": logging_steps,
             "max_steps": global_step, "num_train_epochs": epochs, "save_steps": 500,
             "train_batch_size": batch, "total_flos": 0}
    path = run_dir / "trainer_state.json"
    path.write_text(json.dumps(state, indent=2), encoding="utf-8")
    return path
