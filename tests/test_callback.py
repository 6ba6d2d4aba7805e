"""LadderCallback in a real transformers Trainer on fixture data: a loader that kept 9% of the rows and a
collator that masks every label each stop the run at step 0 with their rung's evidence; the healthy twin
trains, and the preflight finds nothing."""

from __future__ import annotations

import json
import time

import pytest

from interface_models import chat_model_dir

pytestmark = pytest.mark.slow

ROWS = 200


def tokenized_rows(tokenizer, rows: int):
    """Chat rows of the factory's domain through the template, labels on the reply only."""
    from ladder.fixtures import corpus

    out = []
    for problem in corpus.problems_for(corpus.all_pairs(9))[:rows]:
        messages = [{"role": "user", "content": problem.question}, {"role": "assistant", "content": problem.answer}]
        prompt = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
        out.append({"input_ids": full, "labels": [-100] * len(prompt) + full[len(prompt):]})
    return out


def collator(mask_everything: bool):
    import torch

    def collate(rows):
        width = max(len(r["input_ids"]) for r in rows)
        ids = [r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in rows]
        labels = [([-100] * len(r["labels"]) if mask_everything else r["labels"]) + [-100] * (width - len(r["labels"]))
                  for r in rows]
        mask = [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows]
        return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}

    return collate


def train(tmp_path, *, kept: float = 1.0, mask_everything: bool = False, fail: str = "stop"):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from ladder.integrations.transformers import LadderCallback

    model_dir = chat_model_dir("chatml")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = tokenized_rows(tokenizer, ROWS)[: int(ROWS * kept)]  # the loader's cap
    callback = LadderCallback(expect_samples=ROWS, fail=fail)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=8,
                             report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collator(mask_everything),
                      processing_class=tokenizer, callbacks=[callback])
    started = time.perf_counter()
    error = None
    try:
        trainer.train()
    except Exception as exc:  # the callback's stop, checked by the tests
        error = exc
    moved = any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    return callback, trainer, error, moved, time.perf_counter() - started


@pytest.mark.parametrize("fault,kwargs,rung", [("loader kept 9%", {"kept": 0.09}, "data-count"),
                                               ("collator masks every label", {"mask_everything": True},
                                                "label-mask")])
def test_a_data_fault_stops_the_run_at_step_0_with_its_evidence(tmp_path, fault, kwargs, rung):
    from ladder.integrations.transformers import LadderPreflightFailed

    callback, trainer, error, moved, _ = train(tmp_path, **kwargs)
    assert isinstance(error, LadderPreflightFailed), (fault, error)
    assert trainer.state.global_step == 0 and not moved, "stopped before the first optimizer step"
    assert callback.report.culprit.rung == rung, [(r.id, r.status.value, r.summary) for r in callback.report.rungs]
    assert rung in str(error) and "Fix:" in str(error)
    saved = json.loads((tmp_path / "out" / "ladder-preflight" / "report.json").read_text())
    assert saved["culprit"]["rung"] == rung


def test_fail_warn_lets_the_run_train(tmp_path):
    callback, trainer, error, moved, _ = train(tmp_path, kept=0.09, fail="warn")
    assert error is None and trainer.state.global_step == 2 and moved
    assert callback.report.culprit.rung == "data-count"


def test_the_healthy_run_trains_and_the_preflight_finds_nothing(tmp_path):
    callback, trainer, error, moved, seconds = train(tmp_path)
    assert error is None and trainer.state.global_step == 2 and moved
    statuses = {r.id: r.status.value for r in callback.report.rungs}
    assert callback.report.culprit is None, [(r.id, r.status.value, r.summary) for r in callback.report.rungs]
    assert statuses["data-count"] == "pass" and statuses["label-mask"] == "pass", statuses
