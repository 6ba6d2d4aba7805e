"""label-mask: dumps of batches and user collators, judged with and without the model's tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_helpers import chat_rows, run_rung, write_jsonl
from helpers import write

IGNORE = -100

COLLATORS = '''
IGNORE = -100


def _encode(sample, tokenizer):
    messages = sample["messages"]
    prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    return prompt_ids, full_ids


def _pad(rows, labels, pad_id):
    width = max(len(r) for r in rows)
    return {
        "input_ids": [r + [pad_id] * (width - len(r)) for r in rows],
        "labels": [l + [IGNORE] * (width - len(l)) for l in labels],
        "attention_mask": [[1] * len(r) + [0] * (width - len(r)) for r in rows],
    }


def healthy(samples, tokenizer):
    rows, labels = [], []
    for sample in samples:
        prompt_ids, full_ids = _encode(sample, tokenizer)
        rows.append(full_ids)
        labels.append([IGNORE] * len(prompt_ids) + full_ids[len(prompt_ids):])
    return _pad(rows, labels, tokenizer.pad_token_id)


def template_never_found(samples, tokenizer):
    """A completion-only collator looking for a response template the chat template never writes."""
    marker = tokenizer("### Response:", add_special_tokens=False)["input_ids"]
    rows, labels = [], []
    for sample in samples:
        _, full_ids = _encode(sample, tokenizer)
        start = None
        for i in range(len(full_ids) - len(marker) + 1):
            if full_ids[i:i + len(marker)] == marker:
                start = i + len(marker)
        rows.append(full_ids)
        labels.append([IGNORE] * len(full_ids) if start is None else [IGNORE] * start + full_ids[start:])
    return _pad(rows, labels, tokenizer.pad_token_id)


def masks_end_tokens(samples, tokenizer):
    """Masks every special token by id (as a collator does with pad == eos): the end of turn too."""
    batch = healthy(samples, tokenizer)
    special = set(tokenizer.all_special_ids)
    batch["labels"] = [[IGNORE if t in special else l for t, l in zip(ids, labels)]
                       for ids, labels in zip(batch["input_ids"], batch["labels"])]
    return batch


def inverted(samples, tokenizer):
    rows, labels = [], []
    for sample in samples:
        prompt_ids, full_ids = _encode(sample, tokenizer)
        rows.append(full_ids)
        labels.append(prompt_ids + [IGNORE] * (len(full_ids) - len(prompt_ids)))
    return _pad(rows, labels, tokenizer.pad_token_id)


def crashes(samples, tokenizer):
    return samples[0]["no such field"]


def as_numpy(samples, tokenizer):
    import numpy as np

    return {k: np.array(v) for k, v in healthy(samples, tokenizer).items()}
'''


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """A small real chat tokenizer (ChatML-like template) from the fixture factory, saved to disk."""
    from ladder.fixtures.tokenizer import build_tokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer("chatml", vocab_size=300, max_operand=20, seed=0).save_pretrained(folder)
    return folder


@pytest.fixture
def chat_case(tmp_path, tokenizer_dir):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(20))
    collators = write(tmp_path / "collate.py", COLLATORS)

    def case(function: str) -> dict:
        return {"model": tokenizer_dir, "data": data, "collator": f"{collators}:{function}"}

    return case


def test_healthy_collator_passes(chat_case):
    result = run_rung("label-mask", **chat_case("healthy"))
    assert result.status.value == "pass", result.summary
    assert result.evidence["answer_tokens_trained"] == 1.0
    assert result.evidence["prompt_tokens_trained"] < 0.2
    assert result.evidence["examples_stop_trained"] == result.evidence["examples"] == 20


def test_numpy_output_of_a_collator_is_read(chat_case):
    assert run_rung("label-mask", **chat_case("as_numpy")).status.value == "pass"


def test_response_template_never_found_trains_nothing(chat_case):
    result = run_rung("label-mask", **chat_case("template_never_found"))
    assert result.status.value == "fail"
    assert "20 of 20 examples train on nothing" in result.summary
    assert "response template was never found" in result.summary
    shown = result.evidence["example"]
    assert not any(t["trained"] for t in shown["tokens"])
    assert "<|im_start|>assistant" in shown["rendered"]


def test_end_token_masked_everywhere_fails(chat_case):
    result = run_rung("label-mask", **chat_case("masks_end_tokens"))
    assert result.status.value == "fail"
    assert "no end token is ever trained" in result.summary


def test_prompt_trained_instead_of_answer(chat_case):
    result = run_rung("label-mask", **chat_case("inverted"))
    assert result.status.value == "fail"
    assert "prompt is trained instead of the answer" in result.summary
    parts = {t["part"] for t in result.evidence["example"]["tokens"] if t["trained"]}
    assert "answer" not in parts and "prompt" in parts


def test_collator_that_raises_is_a_finding(chat_case):
    result = run_rung("label-mask", **chat_case("crashes"))
    assert result.status.value == "warn"
    assert "KeyError" in result.summary


def test_collator_needs_the_tokenizer(chat_case):
    case = chat_case("healthy")
    del case["model"]
    result = run_rung("label-mask", **case)
    assert result.status.value == "skip"
    assert "--model" in result.summary


def test_skips_without_batches_or_collator():
    result = run_rung("label-mask")
    assert result.status.value == "skip"
    assert "--batches" in result.summary and "--collator" in result.summary


# ---- batch dumps, no tokenizer: judged by position ---------------------------------------------------


def _batch(untrained: bool = False, end_masked: bool = False, shifted: bool = False, rows: int = 6):
    """Right-padded rows: prompt ids 10.., answer ids 50.., end token 2, pad 0."""
    ids, labels, mask = [], [], []
    for r in range(rows):
        prompt = list(range(10, 16 + r))
        answer = [50 + r, 51 + r, 2]
        row = prompt + answer
        lab = [IGNORE] * len(prompt) + answer
        if untrained:
            lab = [IGNORE] * len(row)
        if end_masked:
            lab[-1] = IGNORE
        pad = 14 - len(row)
        ids.append(row + [0] * pad)
        labels.append(lab + [IGNORE] * pad)
        mask.append([1] * len(row) + [0] * pad)
    if shifted:
        labels = [row[1:] for row in labels]
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def test_batches_jsonl_healthy(tmp_path):
    path = write_jsonl(tmp_path / "batches.jsonl", [_batch(), _batch()])
    result = run_rung("label-mask", batches=path)
    assert result.status.value == "pass", result.summary
    assert result.evidence["examples"] == 12
    assert result.evidence["stop_ids"] == [2]


def test_batches_all_masked_fail(tmp_path):
    path = write_jsonl(tmp_path / "batches.jsonl", [_batch(untrained=True)])
    result = run_rung("label-mask", batches=path)
    assert result.status.value == "fail"
    assert "6 of 6 examples train on nothing" in result.summary


def test_batches_end_never_trained_fail(tmp_path):
    np.savez(tmp_path / "b.npz", **{k: np.array(v) for k, v in _batch(end_masked=True).items()})
    result = run_rung("label-mask", batches=tmp_path / "b.npz")
    assert result.status.value == "fail"
    assert "no end token is ever trained" in result.summary


def test_pre_shifted_labels_are_realigned(tmp_path):
    from safetensors.numpy import save_file

    batch = _batch(shifted=True)
    arrays = {f"batch0.{k}": np.array(v, dtype=np.int64) for k, v in batch.items()}
    save_file(arrays, str(tmp_path / "b.safetensors"))
    result = run_rung("label-mask", batches=tmp_path / "b.safetensors")
    assert result.status.value == "pass", result.summary


def test_pt_dump_loaded_with_weights_only(tmp_path):
    import torch

    torch.save({k: torch.tensor(v) for k, v in _batch().items()}, tmp_path / "b.pt")
    assert run_rung("label-mask", batches=tmp_path / "b.pt").status.value == "pass"


def test_pickled_objects_in_pt_are_refused(tmp_path):
    import torch

    import argparse

    torch.save({"input_ids": argparse.Namespace(code="arbitrary object")}, tmp_path / "b.pt")
    result = run_rung("label-mask", batches=tmp_path / "b.pt")
    assert result.status.value == "warn"
    assert "cannot read" in result.summary


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage", b'{"input_ids": [1, 2]}\n', b'{"input_ids": [1,2], "labels": [1, 2, 3]}'])
def test_bad_batch_files_warn(tmp_path, content):
    name = "b.npz" if content.startswith(b"\x00") else "b.jsonl"
    (tmp_path / name).write_bytes(content)
    result = run_rung("label-mask", batches=tmp_path / name)
    assert result.status.value == "warn", result.summary
    assert "cannot read the batch dump" in result.summary


def test_evidence_is_json(tmp_path):
    path = write_jsonl(tmp_path / "batches.jsonl", [_batch(untrained=True)])
    result = run_rung("label-mask", batches=path)
    json.dumps(result.evidence)
    assert result.evidence["example"]["tokens"][0]["part"] == "?"
