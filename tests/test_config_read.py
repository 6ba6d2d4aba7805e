"""config-read: keys the consumer does not know, wrong types, and intended vs effective values."""

from __future__ import annotations

import json

import pytest

from data_helpers import run_rung, write_trainer_state
from helpers import write

SCHEMAS = '''
import argparse
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel


@dataclass
class LoraSettings:
    r: int = 8
    alpha: float = 16.0


@dataclass
class TrainSettings:
    learning_rate: float = 5e-5
    per_device_train_batch_size: int = 8
    num_train_epochs: float = 3.0
    lr_scheduler_type: str = "linear"
    warmup_steps: int = 0
    bf16: bool = False
    optimizer: Literal["adamw", "sgd"] = "adamw"
    layers_to_train: list[str] = field(default_factory=list)
    lora: LoraSettings = field(default_factory=LoraSettings)


class PydanticSettings(BaseModel):
    learning_rate: float = 5e-5
    epochs: int = 1


def parser():
    made = argparse.ArgumentParser()
    made.add_argument("--learning-rate", type=float, default=5e-5)
    made.add_argument("--epochs", type=int, default=1)
    made.add_argument("--bf16", action="store_true")
    return made


def broken_factory():
    raise RuntimeError("needs a GPU")
'''


def _linear(peak: float, steps: list[int], total: int) -> list[float]:
    return [peak * (1 - s / total) for s in steps]


@pytest.fixture
def schema_file(tmp_path):
    return write(tmp_path / "schemas.py", SCHEMAS)


def test_misspelled_key_and_default_learning_rate_in_the_run(tmp_path, schema_file):
    config = write(tmp_path / "train.yaml", """
        learning_rat: 2.0e-4
        per_device_train_batch_size: 4
        num_train_epochs: 1
        """)
    write_trainer_state(tmp_path / "run", global_step=50, batch=4, epochs=1, steps_per_epoch=50,
                        lr=_linear(5e-5, [10, 20, 30, 40, 50], 50))
    result = run_rung("config-read", train_config=config, config_schema=f"{schema_file}:TrainSettings",
                      run_dir=tmp_path / "run")
    assert result.status.value == "fail"
    assert "did you mean `learning_rate`?" in result.summary
    rows = {row["key"]: row for row in result.evidence["table"]}
    assert rows["learning_rat"]["status"] == "unknown"
    assert "train.yaml:1" in rows["learning_rat"]["note"]
    lr = rows["learning_rate"]
    assert lr["status"] == "differs" and lr["in_file"] == 2e-4 and lr["in_effect"] == pytest.approx(4e-5)
    assert "default of TrainSettings" in lr["note"]
    assert result.evidence["columns"] == ["key", "in_file", "in_effect", "note"]


def test_healthy_config_and_run_pass(tmp_path, schema_file):
    config = write(tmp_path / "train.yaml", """
        learning_rate: 2.0e-4
        per_device_train_batch_size: 4
        num_train_epochs: 1
        warmup_steps: 10
        lora: {r: 16, alpha: 32}
        """)
    steps = [10, 20, 30, 40, 50]
    write_trainer_state(tmp_path / "run", global_step=50, batch=4, epochs=1, steps_per_epoch=50,
                        lr=[2e-4 * (1 - (s - 10) / 40) for s in steps])
    (tmp_path / "run" / "adapter_config.json").write_text(json.dumps({"r": 16, "lora_alpha": 32}))
    result = run_rung("config-read", train_config=config, config_schema=f"{schema_file}:TrainSettings",
                      run_dir=tmp_path / "run")
    assert result.status.value == "pass", result.summary
    rows = {row["key"]: row for row in result.evidence["table"]}
    assert rows["learning_rate"]["status"] == "ok"
    assert rows["lora.r"]["status"] == "ok"


def test_run_with_another_learning_rate_without_schema(tmp_path):
    config = write(tmp_path / "train.yaml", "learning_rate: 2.0e-4\nlr_scheduler_type: constant\n")
    write_trainer_state(tmp_path / "run", global_step=30, batch=4, epochs=1, steps_per_epoch=30, lr=[5e-5])
    result = run_rung("config-read", train_config=config, run_dir=tmp_path / "run")
    assert result.status.value == "fail"
    assert "configured 0.0002, the run logged a constant schedule from 5e-05" in result.summary


@pytest.mark.parametrize("logged, expected", [(2e-4, "pass"), (4e-4, "fail")])
def test_run_that_did_not_follow_the_assumed_schedule_is_judged_by_its_peak(tmp_path, logged, expected):
    # no lr_scheduler_type: linear is assumed, but the run logged a constant rate
    config = write(tmp_path / "train.yaml", "learning_rate: 2.0e-4\n")
    write_trainer_state(tmp_path / "run", global_step=100, batch=4, epochs=1, steps_per_epoch=100, lr=[logged])
    result = run_rung("config-read", train_config=config, run_dir=tmp_path / "run")
    assert result.status.value == expected, result.summary
    if expected == "fail":
        assert "a peak of 0.0004" in result.summary


def test_yaml_exponent_without_dot_is_a_string(tmp_path, schema_file):
    config = write(tmp_path / "train.yaml", "learning_rate: 2e-4\nbf16: 'yes'\noptimizer: adam\n")
    result = run_rung("config-read", train_config=config, config_schema=f"{schema_file}:TrainSettings")
    assert result.status.value == "fail"
    rows = {row["key"]: row for row in result.evidence["table"]}
    assert rows["learning_rate"]["status"] == "wrong-type"
    assert "write 2.0e-4" in rows["learning_rate"]["note"]
    assert rows["bf16"]["status"] == "wrong-type"
    assert "expected one of 'adamw', 'sgd'" in rows["optimizer"]["note"]


def test_nested_section_is_found(tmp_path, schema_file):
    config = write(tmp_path / "train.yaml", """
        model: {name: tiny}
        training:
          learning_rate: 1.0e-4
          num_train_epocs: 2
        """)
    result = run_rung("config-read", train_config=config, config_schema=f"{schema_file}:TrainSettings")
    assert result.status.value == "fail"
    assert "checked section `training`" in result.evidence["notes"][0]
    assert "did you mean `num_train_epochs`?" in result.summary


@pytest.mark.parametrize("name, text", [
    ("train.json", '{"learning_rate": 0.0001, "epochs": "two"}'),
    ("train.toml", 'learning_rate = 0.0001\nepochs = "two"\n'),
])
def test_json_and_toml_against_pydantic(tmp_path, schema_file, name, text):
    config = write(tmp_path / name, text)
    result = run_rung("config-read", train_config=config, config_schema=f"{schema_file}:PydanticSettings")
    assert result.status.value == "fail"
    assert "expected int, got str 'two'" in result.summary


def test_argparse_factory(tmp_path, schema_file):
    good = write(tmp_path / "good.yaml", "learning-rate: 0.001\nepochs: 3\nbf16: true\n")
    assert run_rung("config-read", train_config=good, config_schema=f"{schema_file}:parser").status.value == "pass"
    bad = write(tmp_path / "bad.yaml", "learning_rate: 0.001\nepoch: 3\n")
    result = run_rung("config-read", train_config=bad, config_schema=f"{schema_file}:parser")
    assert result.status.value == "fail"
    assert "did you mean `epochs`?" in result.summary


def test_transformers_training_arguments_by_name(tmp_path):
    config = write(tmp_path / "train.yaml", "output_dir: out\nlearning_rat: 2.0e-4\nnum_train_epochs: 1\n")
    result = run_rung("config-read", train_config=config, config_schema="transformers:TrainingArguments")
    assert result.status.value == "fail"
    assert "did you mean `learning_rate`?" in result.summary
    assert "learning_rate = 5e-05 (the default)" in result.summary


def test_param_group_with_zero_learning_rate(tmp_path, schema_file):
    config = write(tmp_path / "train.yaml", "learning_rate: 1.0e-4\nlayers_to_train: [layers.3, layers.4]\n"
                                            "lr_scheduler_type: constant\n")
    write_trainer_state(tmp_path / "run", global_step=20, batch=2, epochs=1, steps_per_epoch=20, lr=[1e-4],
                        extra_logs=[{"lr/group_layers.3": 0.0, "lr/group_embed": 1e-4}])
    result = run_rung("config-read", train_config=config, config_schema=f"{schema_file}:TrainSettings",
                      run_dir=tmp_path / "run")
    assert result.status.value == "fail"
    rows = {row["key"]: row for row in result.evidence["table"]}
    assert rows["learning_rate[layers.3]"]["status"] == "differs"
    assert "the config names layers.3 to train" in rows["learning_rate[layers.3]"]["note"]


def test_saved_effective_config_that_differs(tmp_path):
    config = write(tmp_path / "train.yaml", "learning_rate: 2.0e-4\nmax_seq_length: 2048\nwarmup_ratio: 0.1\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "effective_config.json").write_text(json.dumps(
        {"learning_rate": 2e-4, "max_seq_length": 512, "warmup_ratio": 0.1}))
    result = run_rung("config-read", train_config=config, run_dir=tmp_path / "run")
    assert result.status.value == "fail"
    rows = {row["key"]: row for row in result.evidence["table"]}
    assert rows["max_seq_length"]["status"] == "differs" and rows["max_seq_length"]["in_effect"] == 512
    assert rows["learning_rate"]["status"] == "ok"


def test_checkpoint_config_json_is_compared(tmp_path):
    config = write(tmp_path / "train.yaml", "model:\n  max_position_embeddings: 4096\n")
    (tmp_path / "run" / "checkpoint-20").mkdir(parents=True)
    (tmp_path / "run" / "checkpoint-20" / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    result = run_rung("config-read", train_config=config, run_dir=tmp_path / "run")
    assert result.status.value == "fail"
    assert "checkpoint-20/config.json" in result.summary


def test_pickle_only_run_dir_is_skipped_with_reason(tmp_path):
    config = write(tmp_path / "train.yaml", "learning_rate: 2.0e-4\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "training_args.bin").write_bytes(b"\x80\x04never unpickled")
    (tmp_path / "run" / "optimizer.pt").write_bytes(b"\x80\x04")
    result = run_rung("config-read", train_config=config, run_dir=tmp_path / "run")
    assert result.status.value == "skip"
    assert "pickles" in result.summary and "training_args.bin" in result.summary


def test_skips_without_schema_or_run_dir(tmp_path):
    config = write(tmp_path / "train.yaml", "learning_rate: 2.0e-4\n")
    result = run_rung("config-read", train_config=config)
    assert result.status.value == "skip"
    assert "--config-schema" in result.summary and "--run-dir" in result.summary


def test_skips_without_config():
    result = run_rung("config-read")
    assert result.status.value == "skip"
    assert "--train-config" in result.summary


@pytest.mark.parametrize("text", ["learning_rate: [unclosed\n", "\x00\x01\x02", "- a list\n- not a mapping\n"])
def test_bad_config_files_warn(tmp_path, schema_file, text):
    config = tmp_path / "train.yaml"
    config.write_text(text)
    result = run_rung("config-read", train_config=config, config_schema=f"{schema_file}:TrainSettings")
    assert result.status.value == "warn"
    assert "cannot read the training config" in result.summary


def test_bad_schema_reference_warns(tmp_path, schema_file):
    config = write(tmp_path / "train.yaml", "learning_rate: 2.0e-4\n")
    for reference, said in ((f"{schema_file}:Nope", "has no 'Nope'"), (f"{schema_file}:broken_factory", "needs a GPU")):
        result = run_rung("config-read", train_config=config, config_schema=reference)
        assert result.status.value == "warn" and said in result.summary


def test_schema_file_importing_its_sibling_module(tmp_path):
    write(tmp_path / "settings_base.py", "BATCH = 8\n")
    schema = write(tmp_path / "train.py", """
        from dataclasses import dataclass
        from settings_base import BATCH


        @dataclass
        class Config:
            learning_rate: float = 5e-5
            batch_size: int = BATCH
        """)
    config = write(tmp_path / "train.yaml", "learning_rate: 1.0e-4\nbatch_size: 4\n")
    result = run_rung("config-read", train_config=config, config_schema=f"{schema}:Config")
    assert result.status.value == "pass", result.summary


@pytest.mark.parametrize("saved, expected", [(20, "pass"), (50, "fail")])
def test_step_counts_below_one_are_a_share_of_the_run(tmp_path, saved, expected):
    """The Trainer reads save_steps 0.1 as a tenth of max_steps: a run of 200 steps saving every 20 read it."""
    import json as json_

    config = write(tmp_path / "train.yaml", "learning_rate: 2.0e-4\nlr_scheduler_type: constant\n"
                                            "save_steps: 0.1\nlogging_steps: 10\n")
    state_path = write_trainer_state(tmp_path / "run", global_step=200, batch=4, epochs=1, steps_per_epoch=200,
                                     lr=[2e-4])
    state = json_.loads(state_path.read_text())
    state["save_steps"] = saved
    state_path.write_text(json_.dumps(state))
    result = run_rung("config-read", train_config=config, run_dir=tmp_path / "run")
    assert result.status.value == expected, result.summary
    rows = {row["key"]: row for row in result.evidence["table"]}
    assert rows["save_steps"]["status"] == ("ok" if expected == "pass" else "differs")
    if expected == "fail":
        assert "0.1 of 200 steps is 20, but the run used 50" in result.summary


def test_a_value_the_run_did_not_use_is_said_in_words(tmp_path):
    config = write(tmp_path / "train.yaml", "learning_rate: 2.0e-4\nlr_scheduler_type: constant\nlogging_steps: 5\n")
    write_trainer_state(tmp_path / "run", global_step=40, batch=4, epochs=1, steps_per_epoch=40, lr=[2e-4],
                        logging_steps=10)
    result = run_rung("config-read", train_config=config, run_dir=tmp_path / "run")
    assert result.status.value == "fail"
    assert "`logging_steps` is 5 in the config, but the run used 10 (trainer_state.json logging_steps)" \
        in result.summary, result.summary
