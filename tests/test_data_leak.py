"""data-leak: exact and near duplicates in training data, overlap between train and eval."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq

from data_helpers import chat_rows, run_rung, write_jsonl

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


def _sentence(i: int) -> str:
    """Distinct, varied sentences (no two share most of their n-grams)."""
    rng = random.Random(i)
    return " ".join(rng.choice(WORDS) for _ in range(12)) + f" item {i}"


def test_healthy_train_and_disjoint_eval_pass(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(200))
    evaluation = write_jsonl(tmp_path / "eval.jsonl", chat_rows(40, start=500))
    result = run_rung("data-leak", data=train, eval_data=evaluation)
    assert result.status.value == "pass", result.summary
    assert result.evidence["eval_overlap"]["rows"] == 0
    assert result.evidence["exact_duplicate_rows"] == 0


def test_eval_rows_copied_from_train_fail(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(200))
    evaluation = write_jsonl(tmp_path / "eval.jsonl", chat_rows(10, start=0) + chat_rows(30, start=500))
    result = run_rung("data-leak", data=train, eval_data=evaluation)
    assert result.status.value == "fail"
    overlap = result.evidence["eval_overlap"]
    assert (overlap["rows"], overlap["exact"], overlap["eval_rows"]) == (10, 10, 40)
    assert "10 of 40 evaluation rows occur in training" in result.summary
    assert overlap["examples"][0]["eval"]["line"] == 1


def test_eval_prompt_seen_in_training_with_another_answer(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(100))
    leaked = [{"messages": [{"role": "user", "content": f"What is {i} plus {i + 1}?"},
                            {"role": "assistant", "content": "a different answer"}]} for i in range(5)]
    evaluation = write_jsonl(tmp_path / "eval.jsonl", leaked + chat_rows(20, start=300))
    result = run_rung("data-leak", data=train, eval_data=evaluation)
    assert result.status.value == "fail"
    assert result.evidence["eval_overlap"]["prompt"] == 5


def test_near_copies_in_eval_are_found(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": _sentence(i)} for i in range(300)])
    near = [{"text": _sentence(i) + "!"} for i in range(10)]
    evaluation = write_jsonl(tmp_path / "eval.jsonl", near + [{"text": _sentence(i)} for i in range(1000, 1040)])
    result = run_rung("data-leak", data=train, eval_data=evaluation)
    overlap = result.evidence["eval_overlap"]
    assert overlap["exact"] == 0
    assert overlap["near"] >= 8
    assert result.status.value == "fail"


def test_exact_duplicates_in_training_fail(tmp_path):
    rows = [{"text": _sentence(i)} for i in range(100)]
    rows += [{"text": "  " + _sentence(3).upper() + " "} for _ in range(20)]  # same text, other case and spacing
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    result = run_rung("data-leak", data=train)
    assert result.status.value == "fail"
    assert result.evidence["exact_duplicate_rows"] == 20
    top = result.evidence["duplicate_examples"][0]
    assert top["copies"] == 21 and top["at"][0] == "train.jsonl:4"
    assert result.evidence["eval_overlap"] is None


def test_a_few_duplicates_warn(tmp_path):
    rows = [{"text": _sentence(i)} for i in range(100)] + [{"text": _sentence(0)}]
    result = run_rung("data-leak", data=write_jsonl(tmp_path / "t.jsonl", rows))
    assert result.status.value == "warn"


def test_near_duplicates_within_training(tmp_path):
    rows = [{"text": _sentence(i)} for i in range(60)]
    rows += [{"text": _sentence(i) + " (copy)"} for i in range(30)]
    result = run_rung("data-leak", data=write_jsonl(tmp_path / "t.jsonl", rows))
    assert result.evidence["near_duplicate_rows"] >= 25
    assert result.status.value == "fail"
    assert result.evidence["near_examples"][0]["similarity"] >= 0.85


def test_parquet_training_data(tmp_path):
    pq.write_table(pa.table({"text": [_sentence(i) for i in range(50)] * 2}), tmp_path / "t.parquet")
    result = run_rung("data-leak", data=tmp_path / "t.parquet")
    assert result.evidence["exact_duplicate_rows"] == 50
    assert result.status.value == "fail"


def test_unreadable_training_data_is_a_finding(tmp_path):
    (tmp_path / "t.jsonl").write_bytes(b"\x00\x01\x02 garbage")
    result = run_rung("data-leak", data=tmp_path / "t.jsonl")
    assert result.status.value == "warn"
    assert "no readable training rows" in result.summary


def test_skips_without_data():
    result = run_rung("data-leak")
    assert result.status.value == "skip"
    assert "--data" in result.summary


def test_evidence_is_json(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", chat_rows(20) * 2)
    result = run_rung("data-leak", data=train, eval_data=train)
    json.dumps(result.evidence)
    assert result.evidence["eval_overlap"]["fraction"] == 1.0


def test_templated_rows_that_differ_in_numbers_are_not_near_copies(tmp_path):
    def row(a, b):
        return {"text": f"<|im_start|>user\nWhat is {a} plus {b}?<|im_end|>\n<|im_start|>assistant\n{a + b}<|im_end|>\n"}

    pairs = [(a, b) for a in range(30) for b in range(30)]
    train = write_jsonl(tmp_path / "train.jsonl", [row(a, b) for a, b in pairs if (a * 31 + b) % 4])
    evaluation = write_jsonl(tmp_path / "eval.jsonl", [row(a, b) for a, b in pairs if not (a * 31 + b) % 4])
    result = run_rung("data-leak", data=train, eval_data=evaluation, text_field="text")
    assert result.status.value == "pass", result.summary
    assert result.evidence["near_duplicate_rows"] == 0
