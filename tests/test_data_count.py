"""data-count: counts in every format, where rows are lost, and what the run consumed."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_helpers import chat_rows, run_rung, write_jsonl, write_trainer_state
from helpers import run_cli, write

ROWS = [{"text": f"sample number {i}"} for i in range(560)]


def test_founding_case_reports_rows_consumed_and_zero_loss(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", ROWS)
    # 50 steps of batch 1 in one epoch: the run saw 50 rows; loss hit 0 at step 40
    write_trainer_state(tmp_path / "run", global_step=50, batch=1, epochs=1, steps_per_epoch=50,
                        loss=[1.2, 0.4, 0.2, 0.0, 0.0])
    result = run_rung("data-count", data=data, run_dir=tmp_path / "run", expect_samples=560)
    assert result.status.value == "fail"
    assert "parseable 560 of 560 expected" in result.summary
    assert "consumed about 50 (9%)" in result.summary
    assert "training loss reached 0.00 at step 40" in result.summary
    assert result.evidence["consumed"] == 50
    assert result.evidence["run"]["loss"]["loss"][-1] == 0.0
    assert "memorising" in result.evidence["loss_signature"]


def test_healthy_data_and_run_pass(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", ROWS)
    write_trainer_state(tmp_path / "run", global_step=140, batch=8, epochs=2, steps_per_epoch=70,
                        loss=[2.0, 1.5, 1.2, 1.1])
    result = run_rung("data-count", data=data, run_dir=tmp_path / "run", expect_samples=560)
    assert result.status.value == "pass", result.summary
    assert result.evidence["consumed"] == 560
    assert result.evidence["run"]["samples_trained"] == 1120


def test_exact_count_from_all_results(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", ROWS)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "all_results.json").write_text(json.dumps({"train_samples": 280, "epoch": 1.0}))
    result = run_rung("data-count", data=data, run_dir=tmp_path / "run")
    assert result.status.value == "fail"
    assert "the run consumed 280 (50%)" in result.summary
    assert result.evidence["run"]["exact"] is True


def test_gradient_accumulation_from_config_counts(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", ROWS)
    config = write(tmp_path / "train.yaml", "gradient_accumulation_steps: 4\nper_device_train_batch_size: 2\n")
    write_trainer_state(tmp_path / "run", global_step=70, batch=2, epochs=1, steps_per_epoch=70)
    result = run_rung("data-count", data=data, run_dir=tmp_path / "run", train_config=config)
    assert result.status.value == "pass", result.summary
    assert result.evidence["consumed"] == 560


def test_skips_without_data():
    result = run_rung("data-count")
    assert result.status.value == "skip"
    assert "--data" in result.summary


# ---- formats -----------------------------------------------------------------------------------


def _parquet(path, n):
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(n)]}), path, row_group_size=100)


def _datasets_folder(folder, n):
    """A `datasets` save_to_disk folder: Arrow IPC *stream* files, state.json, dataset_info.json."""
    folder.mkdir()
    table = pa.table({"text": [f"row {i}" for i in range(n)]})
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=64):
                writer.write_batch(batch)
    (folder / "state.json").write_text(json.dumps({
        "_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_fingerprint": "x", "_split": "train"}))
    (folder / "dataset_info.json").write_text(json.dumps({"splits": {"train": {"name": "train", "num_examples": n}}}))


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "tsv", "text", "jsonl.gz", "parquet", "arrow-folder"])
def test_formats_count_every_row(tmp_path, kind):
    n = 300
    if kind == "jsonl":
        path = write_jsonl(tmp_path / "d.jsonl", ROWS[:n])
    elif kind == "json":
        path = tmp_path / "d.json"
        path.write_text(json.dumps(ROWS[:n], indent=2))
    elif kind in ("csv", "tsv"):
        sep = "," if kind == "csv" else "\t"
        path = tmp_path / f"d.{kind}"
        path.write_text(f"id{sep}text\n" + "".join(f'{i}{sep}"line {i}, quoted\nacross lines"\n' for i in range(n)))
    elif kind == "text":
        path = tmp_path / "d.txt"
        path.write_text("".join(f"line {i}\n" for i in range(n)))
    elif kind == "jsonl.gz":
        path = tmp_path / "d.jsonl.gz"
        with gzip.open(path, "wt") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in ROWS[:n])
    elif kind == "parquet":
        path = tmp_path / "d.parquet"
        _parquet(path, n)
    else:
        path = tmp_path / "ds"
        _datasets_folder(path, n)
    result = run_rung("data-count", data=path, expect_samples=n)
    assert result.status.value == "pass", result.summary
    assert (result.evidence["present"], result.evidence["parseable"]) == (n, n)


def test_datasets_manifest_gives_the_expected_count(tmp_path):
    _datasets_folder(tmp_path / "ds", 100)
    info = tmp_path / "ds" / "dataset_info.json"
    info.write_text(json.dumps({"splits": {"train": {"num_examples": 1000}}}))
    result = run_rung("data-count", data=tmp_path / "ds")
    assert result.status.value == "fail"
    assert result.evidence["expected_from"] == "dataset_info.json"
    assert "parseable 100 of 1000 expected" in result.summary


def test_datasets_dict_uses_the_train_split(tmp_path):
    root = tmp_path / "dd"
    root.mkdir()
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    _datasets_folder(root / "train", 120)
    _datasets_folder(root / "test", 7)
    result = run_rung("data-count", data=root, expect_samples=120)
    assert result.status.value == "pass", result.summary


def test_parquet_is_counted_from_metadata_and_null_text_is_empty(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a", None, "c", None]}), path)
    result = run_rung("data-count", data=path, expect_samples=4, text_field="text")
    assert result.evidence["parseable"] == 4
    assert result.evidence["usable"] == 2
    assert result.status.value == "fail"


# ---- where rows are lost ------------------------------------------------------------------------------


def test_unparsable_lines_are_numbered(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", ROWS[:100], extra_lines=['{"text": "cut off', "not json at all"])
    result = run_rung("data-count", data=data, expect_samples=102)
    assert result.status.value == "fail"
    lost = result.evidence["files"][0]["unparsable"]
    assert [u["line"] for u in lost] == [101, 102]
    assert "line 101" in json.dumps(result.evidence["where_lost"])


def test_a_few_bad_lines_within_tolerance_warn(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", ROWS, extra_lines=["{oops"])
    result = run_rung("data-count", data=data, params={"tolerance": 0.05})
    assert result.status.value == "warn"
    assert "1 unparsable" in result.summary


def test_rows_missing_the_configured_text_field(tmp_path):
    rows = ROWS[:80] + [{"content": "wrong field"}] * 20
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    config = write(tmp_path / "sft.yaml", "dataset_text_field: text\n")
    result = run_rung("data-count", data=data, train_config=config)
    assert result.status.value == "fail"
    assert result.evidence["text_field_from"] == "training config"
    assert "20 rows lack the text field 'text'" in json.dumps(result.evidence["where_lost"])


def test_rows_lacking_a_common_field_without_a_named_text_field(tmp_path):
    rows = [{"prompt": "p", "answer": "a"}] * 90 + [{"prompt": "p"}] * 10
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    result = run_rung("data-count", data=data)
    assert "10 rows lack the field 'answer'" in json.dumps(result.evidence["where_lost"])


def test_shard_glob_in_config_that_matches_fewer_files(tmp_path):
    folder = tmp_path / "shards"
    for i in range(10):
        write_jsonl(folder / f"train-{i:05d}.jsonl", ROWS[:10])
    config = write(tmp_path / "train.yaml", "data_files: shards/train-0000[0-4].jsonl\n")
    result = run_rung("data-count", data=folder, train_config=config)
    assert result.status.value == "fail"
    assert "matches 5 of the 10 data files" in result.summary


def test_glob_matching_nothing(tmp_path):
    write_jsonl(tmp_path / "data" / "part-1.jsonl", ROWS[:10])
    config = write(tmp_path / "train.yaml", "dataset:\n  train_files: data/*.parquet\n")
    result = run_rung("data-count", data=tmp_path / "data", train_config=config)
    assert result.status.value == "fail"
    assert "matches 0 of the 1 data files" in result.summary


def test_missing_shards_by_name(tmp_path):
    for i in (0, 1, 3):
        pq.write_table(pa.table({"text": ["x"] * 5}), tmp_path / f"train-{i:05d}-of-00004.parquet")
    result = run_rung("data-count", data=tmp_path)
    assert result.status.value == "fail"
    assert "3 of 4 shards" in result.summary and "missing index 2" in result.summary


def test_sample_cap_in_config_is_named(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", ROWS)
    config = write(tmp_path / "train.yaml", "max_train_samples: 50\nnum_train_samples: 560\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train_results.json").write_text(json.dumps({"train_samples": 50}))
    result = run_rung("data-count", data=data, train_config=config, run_dir=tmp_path / "run")
    assert result.status.value == "fail"
    assert result.evidence["expected_from"] == "training config `num_train_samples`"
    assert "caps the training set at 50" in json.dumps(result.evidence["where_lost"])


# ---- bad files: findings, never tracebacks ------------------------------------------------------------


def test_binary_garbage(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(bytes(range(256)) * 40 + b"\n" + b"\x00\xff" * 100)
    result = run_rung("data-count", data=path)
    assert result.status.value == "fail"
    assert result.evidence["parseable"] == 0


def test_empty_file(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(b"")
    result = run_rung("data-count", data=tmp_path / "d.jsonl")
    assert result.status.value == "fail"
    assert "no rows" in result.summary


def test_folder_without_data_files(tmp_path):
    (tmp_path / "notes.docx").write_bytes(b"PK\x03\x04")
    result = run_rung("data-count", data=tmp_path)
    assert result.status.value == "fail"
    assert result.evidence["files_ignored"] == ["notes.docx"]


def test_utf16_file_is_read_and_noted(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes("".join(json.dumps(r) + "\n" for r in ROWS[:20]).encode("utf-16"))
    result = run_rung("data-count", data=path, expect_samples=20)
    assert result.status.value == "warn"
    assert result.evidence["parseable"] == 20
    assert "UTF-16" in result.summary


def test_latin1_lines_are_unparsable(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    result = run_rung("data-count", data=path)
    assert result.evidence["files"][0]["unparsable"][0]["reason"] == "not valid UTF-8"


def test_truncated_gzip(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    whole = gzip.compress("".join(json.dumps(r) + "\n" for r in ROWS).encode())
    path.write_bytes(whole[: len(whole) // 2])
    result = run_rung("data-count", data=path)
    assert result.status.value == "fail"
    assert "gzip stream broken" in result.summary


def test_corrupt_parquet(tmp_path):
    (tmp_path / "d.parquet").write_bytes(b"PAR1 not really")
    result = run_rung("data-count", data=tmp_path / "d.parquet")
    assert result.status.value == "fail"
    assert "cannot read as Parquet" in result.summary


def test_truncated_json_array(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(ROWS[:50])[:-40])
    result = run_rung("data-count", data=path, expect_samples=50)
    assert result.status.value == "fail"
    assert 45 <= result.evidence["parseable"] < 50


def test_unreadable_run_files_are_noted(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", ROWS[:10])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "trainer_state.json").write_text("{not json")
    (tmp_path / "run" / "training_args.bin").write_bytes(b"\x80\x04")
    result = run_rung("data-count", data=data, run_dir=tmp_path / "run")
    assert result.status.value == "pass"
    assert "pickles are never loaded" in result.evidence["run"]["note"]


def test_cli_end_to_end(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", ROWS[:100])
    out = tmp_path / "report.json"
    done = run_cli("probe", "--data", str(data), "--expect-samples", "1000", "--json", str(out),
                   "--ladder", str(_one_rung_ladder(tmp_path)))
    assert done.returncode == 1, done.stderr
    report = json.loads(out.read_text())
    assert report["culprit"]["rung"] == "data-count"
    assert "Traceback" not in done.stderr


def _one_rung_ladder(tmp_path):
    return write(tmp_path / "ladder.yaml", """
        name: data-only
        rungs:
          - id: data-count
            title: the data that was loaded is not the data that was meant
            tier: data
            probe: data-count
            why: rows lost
            fix: read every row
        """)


def test_chat_rows_with_messages_field_are_guessed(tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(30) + [{"messages": []}])
    result = run_rung("data-count", data=data)
    assert result.evidence["text_field"] == "messages"
    assert result.evidence["usable"] == 30


# ---- large files: checked by structure, bad chunks parsed line by line -----------------------------------


@pytest.mark.parametrize("extra, field, lost", [
    (['{"text": "cut off'], None, "1 unparsable rows (first at line 561"),
    (['{"text": ""}'], "text", "1 rows have an empty 'text' (lines 561)"),
    (['{"other": "x"}'], "text", "1 rows lack the text field 'text' (lines 561)"),
    (["caf\xe9 not json"], None, "1 unparsable rows (first at line 561"),
])
def test_structure_mode_finds_and_numbers_bad_lines(tmp_path, extra, field, lost):
    data = write_jsonl(tmp_path / "d.jsonl", ROWS, extra_lines=extra)
    result = run_rung("data-count", data=data, text_field=field, params={"full_parse_mb": 0})
    assert lost in json.dumps(result.evidence["where_lost"])
    assert result.evidence["present"] == 561


def test_structure_mode_counts_healthy_data(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", ROWS)
    result = run_rung("data-count", data=data, text_field="text", expect_samples=560, params={"full_parse_mb": 0})
    assert result.status.value == "pass"
    assert 0 < result.evidence["files"][0]["parsed_in_full"] < 560
