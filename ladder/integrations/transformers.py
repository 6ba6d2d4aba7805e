"""`LadderCallback`: ladder's preflight inside a `transformers.Trainer` (or TRL's `SFTTrainer`), at step 0.

At `on_train_begin` it runs the model-free rungs (`ladder.preflight`: data-count, label-mask, data-leak,
config-read) on the trainer's own objects, written to `OUTPUT_DIR/ladder-preflight/inputs/` as the files
those rungs read:

- the rows of its train dataset (`train_dataloader.dataset`, in order; token ids decoded to a `text` field
  when the rows hold no text), and of `eval_dataset` when given;
- the first batches its data collator (`train_dataloader.collate_fn`, the Trainer's own, column removal
  included) makes of the first rows, at the run's batch size;
- its tokenizer (`processing_class`), which label-mask reads;
- its `TrainingArguments` as the effective config (or the config file you give), checked against
  `TrainingArguments` itself.

It writes `report.json` and `report.md` beside them, prints the culprit and its fix, and on a `fail` raises
`LadderPreflightFailed` before the first optimizer step (`fail="stop"`, the default) or only warns
(`fail="warn"`). Nothing of the trainer is changed: the random states the collator may draw from are put
back, and the dataloader is not iterated (that would draw the shuffling seed).

    trainer = Trainer(..., callbacks=[LadderCallback(expect_samples=560_000)])
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

FAIL_MODES = ("stop", "warn")


class LadderPreflightFailed(RuntimeError):
    """The preflight found a culprit: training stopped before its first step."""


class LadderCallback(TrainerCallback):
    """Run ladder's model-free rungs on the trainer's data, collator and config before the first step."""

    def __init__(self, expect_samples: int | None = None, *, eval_dataset: Any = None,
                 train_config: str | Path | None = None, fail: str = "stop", report_dir: str | Path | None = None,
                 label_examples: int = 64):
        if fail not in FAIL_MODES:
            raise ValueError(f"fail must be one of {FAIL_MODES}, not {fail!r}")
        self.expect_samples = expect_samples
        self.eval_dataset = eval_dataset
        self.train_config = train_config
        self.fail = fail
        self.report_dir = report_dir
        self.label_examples = label_examples
        self.report = None  # the preflight's Report, once it ran

    def on_train_begin(self, args, state, control, processing_class=None, train_dataloader=None, **kwargs):
        if not state.is_world_process_zero:
            return control
        self.report = self.preflight(args, processing_class, train_dataloader)
        culprit = self.report.culprit
        if culprit is None:
            sys.stderr.write("ladder preflight: no culprit in the data, labels or config\n")
            return control
        message = (f"ladder preflight: {culprit.rung} failed: {culprit.summary}\nFix: {culprit.fix or ''}\n"
                   f"Report: {self.folder(args) / 'report.md'}")
        if self.fail == "stop":
            raise LadderPreflightFailed(message + "\n(training stopped before its first step; "
                                                  "LadderCallback(fail='warn') only warns)")
        sys.stderr.write(message + "\n")
        return control

    def folder(self, args) -> Path:
        return Path(self.report_dir or args.output_dir) / "ladder-preflight"

    def preflight(self, args, tokenizer, train_dataloader):
        """Write the trainer's inputs as files, walk the preflight rungs on them; returns the Report."""
        from ladder.case import Case
        from ladder.loader import load_ladder
        from ladder.preflight import preflight_ladder
        from ladder.registry import ProbeRegistry
        from ladder.report.writers import write_report
        from ladder.runner import Runner

        folder = self.folder(args)
        inputs = folder / "inputs"
        inputs.mkdir(parents=True, exist_ok=True)
        dataset = getattr(train_dataloader, "dataset", None)
        keys: dict[str, Any] = {"description": f"LadderCallback preflight of {args.output_dir}"}
        if dataset is not None:
            keys["data"] = str(write_rows(dataset, inputs / "train.jsonl", tokenizer))
            collate = getattr(train_dataloader, "collate_fn", None)
            if collate is not None:
                keys["batches"] = str(write_batches(dataset, collate, inputs / "train_batches.jsonl",
                                                    batch_size=max(1, args.per_device_train_batch_size),
                                                    examples=self.label_examples))
        if self.eval_dataset is not None:
            keys["eval_data"] = str(write_rows(self.eval_dataset, inputs / "eval.jsonl", tokenizer))
        if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
            tokenizer.save_pretrained(str(inputs / "tokenizer"))
            keys["model"] = str(inputs / "tokenizer")  # the preflight rungs read only its tokenizer
        if self.train_config is not None:
            keys["train_config"] = str(Path(self.train_config).resolve())
        else:
            config = inputs / "training_args.json"
            config.write_text(json.dumps(args.to_dict(), indent=1, default=str), encoding="utf-8")
            keys["train_config"] = str(config)
        keys["config_schema"] = "transformers:TrainingArguments"
        if self.expect_samples is not None:
            keys["expect_samples"] = int(self.expect_samples)
        registry = ProbeRegistry()
        ladder_ = preflight_ladder(load_ladder(None, registry), registry)
        report = Runner(ladder_, Case.model_validate(keys), registry=registry, keep_going=True).run()
        write_report(report, "json", folder / "report.json")
        write_report(report, "md", folder / "report.md")
        return report


def _jsonable(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


TEXT_KEYS = ("text", "messages", "prompt", "completion", "conversations")


def write_rows(dataset, path: Path, tokenizer=None) -> Path:
    """Every row of `dataset` (indexable, in order) as JSONL; a row with token ids and no text of its own
    gets their decoding as `text`, so the text rungs can read it."""
    with path.open("w", encoding="utf-8") as out:
        for index in range(len(dataset)):
            row = _jsonable(dataset[index])
            if not isinstance(row, dict):
                row = {"value": row}
            if tokenizer is not None and "input_ids" in row and not any(k in row for k in TEXT_KEYS):
                row["text"] = tokenizer.decode(row["input_ids"], skip_special_tokens=False)
            out.write(json.dumps(row) + "\n")
    return path


def write_batches(dataset, collate, path: Path, *, batch_size: int, examples: int) -> Path:
    """What `collate` makes of the first `examples` rows, batch by batch, as JSONL of batches; the random
    states a collator may draw from (Python, NumPy, torch) are put back afterwards."""
    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    try:
        count = min(len(dataset), examples)
        with path.open("w", encoding="utf-8") as out:
            for start in range(0, count, batch_size):
                batch = collate([dataset[i] for i in range(start, min(count, start + batch_size))])
                keep = {k: _jsonable(batch[k]) for k in ("input_ids", "labels", "attention_mask") if k in batch}
                out.write(json.dumps(keep) + "\n")
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
    return path
