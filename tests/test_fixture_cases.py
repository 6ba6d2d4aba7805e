"""Fixture cases: each builds, the healthy control is healthy, and each broken case's bug is real.

The cases come from the real fixture recipe (the chat models are built into the
fixture cache on first use); every check runs the case's own files (harness,
loader, training script, collator) the way a user would.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from ladder.fixtures import cases

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def torch_threads():
    import torch

    torch.set_num_threads(2)


def import_file(path: Path, unique: str):
    """Import a case's Python file as its user would (its folder on sys.path), under a unique name."""
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"case_{unique}_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


_harnesses: dict[str, object] = {}


def harness_of(name: str):
    if name not in _harnesses:
        _harnesses[name] = import_file(cases.build_case(name) / "harness.py", name.replace("-", "_"))
    return _harnesses[name]


def case_yaml(folder: Path) -> dict:
    import yaml

    return yaml.safe_load((folder / "case.yaml").read_text())


def prompt_hits(name: str) -> tuple[int, list[tuple[str, str]]]:
    folder = cases.build_case(name)
    harness = harness_of(name)
    replies = [(p["prompt"], harness.generate(p["prompt"])) for p in case_yaml(folder)["prompts"]]
    expects = [p["expect"] for p in case_yaml(folder)["prompts"]]
    return sum(re.search(e, r) is not None for e, (_, r) in zip(expects, replies)), replies


def record_generate_calls(harness):
    """Wrap the harness model's generate to record the input ids and output ids of each call."""
    tokenizer, model = harness._load()
    calls = []
    original = model.generate

    def recording(*args, **kwargs):
        output = original(*args, **kwargs)
        calls.append((kwargs["input_ids"].tolist(), output.tolist()))
        return output

    model.generate = recording
    return tokenizer, model, calls, lambda: setattr(model, "generate", original)


# ---- every case -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", cases.CASE_NAMES)
def test_case_builds_and_its_case_file_is_valid(name, tmp_path):
    from ladder.case import check_paths_exist, load_case

    folder = cases.build_case(name, dest=tmp_path / name)
    case = load_case(folder / "case.yaml")
    check_paths_exist(case)
    assert case.description and len(case.prompts) == 8
    assert all(p.expect for p in case.prompts)
    for key in ("model", "base", "harness", "data", "eval_data", "train_config", "run_dir", "batches", "collator"):
        assert getattr(case, key), key
    assert not (folder / "manifest.json").exists()


def test_unknown_case_and_wrong_style_are_refused():
    with pytest.raises(KeyError):
        cases.build_case("no-such-case")
    with pytest.raises(ValueError):
        cases.build_case("double-bos", style="chatml")


# ---- the healthy control ------------------------------------------------------------------------------


def test_healthy_harness_answers_and_batches_agree():
    hits, replies = prompt_hits("healthy")
    assert hits >= 7, replies
    harness = harness_of("healthy")
    prompts = [p for p, _ in replies]
    assert harness.generate_batch(prompts) == [r for _, r in replies]


def test_healthy_data_config_run_and_labels_are_consistent():
    import yaml

    folder = cases.build_case("healthy")
    train = import_file(folder / "train.py", "healthy")
    config = train.load_config(folder / "train_config.yaml")
    raw_config = yaml.safe_load((folder / "train_config.yaml").read_text())
    assert set(raw_config) <= set(train.TrainConfig.__dataclass_fields__)  # every key is read
    assert config.learning_rate == 2.0e-4
    rows = import_file(folder / "load_data.py", "healthy").load_rows(folder / config.data_file, config.max_samples)
    assert len(rows) == case_yaml(folder)["expect_samples"] == 600
    state = json.loads((folder / "run" / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert state["global_step"] == state["max_steps"] == -(-600 // 8) * 5
    assert 0.2 < losses[-1] < 0.6 and losses[0] > 2
    assert max(e["learning_rate"] for e in state["log_history"] if "learning_rate" in e) == pytest.approx(2.0e-4)
    train_texts = {json.loads(line)["text"] for line in (folder / "data" / "train.jsonl").read_text().splitlines()}
    eval_texts = {json.loads(line)["text"] for line in (folder / "data" / "eval.jsonl").read_text().splitlines()}
    assert len(train_texts) == 600 and not train_texts & eval_texts
    dump = [json.loads(line) for line in (folder / "batches" / "train_batches.jsonl").read_text().splitlines()]
    assert all(any(label != -100 for label in row["labels"]) for row in dump)


# ---- interface cases ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["raw-harness", "founding"])
def test_raw_harness_does_not_answer(name):
    hits, replies = prompt_hits(name)
    assert hits <= 1, replies


def test_double_bos_harness_really_sends_two_bos():
    tokenizer, _, calls, restore = record_generate_calls(harness_of("double-bos"))
    try:
        harness_of("double-bos").generate("What is 3 plus 4?")
    finally:
        restore()
    sent = calls[0][0][0]
    assert sent[:2] == [tokenizer.bos_token_id] * 2
    assert tokenizer.bos_token_id != sent[2]
    # the same question through the template itself carries one BOS
    healthy_gemma = import_file(cases.build_case("healthy", style="gemma") / "harness.py", "healthy_gemma")
    tokenizer, _, calls, restore = record_generate_calls(healthy_gemma)
    try:
        healthy_gemma.generate("What is 3 plus 4?")
    finally:
        restore()
    assert calls[0][0][0][:2] == [tokenizer.bos_token_id, sent[2]]


def test_eos_missing_generation_runs_past_the_end_of_turn():
    folder = cases.build_case("eos-missing")
    generation = json.loads((folder / "model" / "generation_config.json").read_text())
    tokenizer, _, calls, restore = record_generate_calls(harness_of("eos-missing"))
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos = generation["eos_token_id"]
    assert end_of_turn not in (eos if isinstance(eos, list) else [eos])
    try:
        for p in case_yaml(folder)["prompts"][:3]:
            harness_of("eos-missing").generate(p["prompt"])
    finally:
        restore()
    for sent, output in calls:
        new = output[0][len(sent[0]):]
        assert len(new) == harness_of("eos-missing").MAX_NEW_TOKENS  # never stopped
        assert end_of_turn in new  # although the reply ended
    healthy = json.loads((cases.build_case("healthy") / "model" / "generation_config.json").read_text())
    assert end_of_turn in healthy["eos_token_id"]


def test_right_padding_batch_differs_from_one_at_a_time():
    folder = cases.build_case("right-padding")
    harness = harness_of("right-padding")
    prompts = [p["prompt"] for p in case_yaml(folder)["prompts"]]
    singles = [harness.generate(p) for p in prompts]
    batched = harness.generate_batch(prompts)
    assert sum(a != b for a, b in zip(singles, batched)) >= 3, (singles, batched)


def test_foreign_tokenizer_ids_differ_and_the_model_stops_answering():
    from transformers import AutoTokenizer

    folder = cases.build_case("foreign-tokenizer")
    shipped = AutoTokenizer.from_pretrained(folder / "model")
    own = AutoTokenizer.from_pretrained(folder / "base")
    assert len(shipped) == len(own)
    question = "What is 3 plus 4?"
    assert shipped(question)["input_ids"] != own(question)["input_ids"]
    hits, replies = prompt_hits("foreign-tokenizer")
    assert hits <= 2, replies


def test_unresized_embeddings_tokenizer_outgrows_the_embedding_matrix():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = cases.build_case("unresized-embeddings") / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    rows = model.get_input_embeddings().num_embeddings
    assert len(tokenizer) == rows + len(cases.ADDED_TOKENS)
    ids = tokenizer("<tool_call>", add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert int(ids.max()) >= rows
    with pytest.raises(IndexError):
        with torch.no_grad():
            model(input_ids=ids)


# ---- data and config cases ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["truncated-data", "founding"])
def test_loader_keeps_nine_percent_and_the_run_memorised_them(name):
    folder = cases.build_case(name)
    train = import_file(folder / "train.py", name.replace("-", "_"))
    config = train.load_config(folder / "train_config.yaml")
    rows = import_file(folder / "load_data.py", name.replace("-", "_")).load_rows(folder / config.data_file,
                                                                                 config.max_samples)
    on_disk = len((folder / "data" / "train.jsonl").read_text().splitlines())
    assert on_disk == case_yaml(folder)["expect_samples"] == 600
    assert len(rows) / on_disk == pytest.approx(0.09, abs=0.005)
    state = json.loads((folder / "run" / "trainer_state.json").read_text())
    consumed = state["global_step"] * state["train_batch_size"] / state["num_train_epochs"]
    assert consumed == pytest.approx(len(rows), abs=state["train_batch_size"])
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert min(losses[len(losses) // 2:]) < 0.05  # ~0 by mid-run
    assert json.loads((folder / "run" / "all_results.json").read_text())["train_samples"] == len(rows)


def test_misspelled_key_is_ignored_by_the_training_script():
    import yaml

    folder = cases.build_case("misspelled-config")
    raw = yaml.safe_load((folder / "train_config.yaml").read_text())
    assert raw["learning_rat"] == 2.0e-4 and "learning_rate" not in raw
    train = import_file(folder / "train.py", "misspelled")
    config = train.load_config(folder / "train_config.yaml")
    assert config.learning_rate == 5e-5 and not hasattr(config, "learning_rat")
    state = json.loads((folder / "run" / "trainer_state.json").read_text())
    assert max(e["learning_rate"] for e in state["log_history"] if "learning_rate" in e) == pytest.approx(5e-5)


def test_collator_template_never_matches_so_every_label_is_ignored():
    from transformers import AutoTokenizer

    folder = cases.build_case("collator-no-match")
    collate = import_file(folder / "collator.py", "nomatch").collate
    tokenizer = AutoTokenizer.from_pretrained(folder / "model")
    rows = [json.loads(line) for line in (folder / "data" / "train.jsonl").read_text().splitlines()[:16]]
    assert bool((collate(rows, tokenizer)["labels"] == -100).all())
    dump = [json.loads(line) for line in (folder / "batches" / "train_batches.jsonl").read_text().splitlines()]
    assert dump and all(set(row["labels"]) == {-100} for row in dump)
    # the healthy collator trains exactly the reply and the end of turn
    healthy = cases.build_case("healthy")
    batch = import_file(healthy / "collator.py", "healthy").collate(rows[:1], tokenizer)
    labels = [t for t in batch["labels"][0].tolist() if t != -100]
    assert tokenizer.decode(labels) == rows[0]["messages"][1]["content"] + "<|im_end|>\n"


def test_train_eval_overlap_shares_rows():
    folder = cases.build_case("train-eval-overlap")
    train = {json.loads(line)["text"] for line in (folder / "data" / "train.jsonl").read_text().splitlines()}
    evaluation = [json.loads(line)["text"] for line in (folder / "data" / "eval.jsonl").read_text().splitlines()]
    shared = sum(text in train for text in evaluation)
    assert shared == round(len(evaluation) * cases.OVERLAP_FRACTION) and shared > 0


# ---- weights cases --------------------------------------------------------------------------------------


def test_fp16_overflow_matches_in_fp32_and_overflows_in_fp16():
    import torch

    from ladder.fixtures.models import load

    tokenizer, scaled = load(cases.build_case("fp16-overflow") / "model")
    _, healthy = load(cases.build_case("healthy") / "model")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is 3 plus 4?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        reference = healthy(input_ids=ids).logits
        in_fp32 = scaled(input_ids=ids).logits
        in_fp16 = scaled.to(torch.float16)(input_ids=ids, output_hidden_states=True)
    assert torch.allclose(in_fp32, reference, atol=1e-3, rtol=1e-3)
    assert in_fp32[0, -1].argmax() == reference[0, -1].argmax()
    assert not torch.isfinite(in_fp16.logits).all()
    assert any(not torch.isfinite(h).all() for h in in_fp16.hidden_states)
    with torch.no_grad():  # the healthy model is fine in fp16
        assert torch.isfinite(healthy.to(torch.float16)(input_ids=ids).logits).all()


def test_adapter_is_saved_but_never_applied():
    import torch

    from ladder.fixtures.models import load
    from ladder.fixtures.surgery import apply_lora_adapter

    folder = cases.build_case("adapter-unapplied")
    assert (folder / "run" / "adapter_config.json").is_file()
    assert (folder / "run" / "adapter_model.safetensors").is_file()
    _, served = load(folder / "model")
    _, base = load(folder / "base")
    _, chat = load(cases.build_case("healthy") / "model")
    served_params, base_params = dict(served.named_parameters()), dict(base.named_parameters())
    assert all(torch.equal(p, base_params[n]) for n, p in served_params.items())  # what the harness runs is the base
    apply_lora_adapter(served, folder / "run")
    chat_params = dict(chat.named_parameters())
    for name, param in served.named_parameters():
        if name.endswith("proj.weight"):
            assert torch.allclose(param, chat_params[name], atol=1e-5)  # base + adapter = the fine-tune
            assert not torch.allclose(base_params[name], chat_params[name], atol=1e-3)
    hits, replies = prompt_hits("adapter-unapplied")
    healthy_hits, _ = prompt_hits("healthy")
    assert hits < healthy_hits, replies


def test_frankenmerge_repeats_layers_and_damages_answers():
    import torch

    from ladder.fixtures.models import load

    folder = cases.build_case("frankenmerge")
    _, merged = load(folder / "model")
    _, chat = load(cases.build_case("healthy") / "model")
    assert merged.config.num_hidden_layers == len(cases.FRANKENMERGE_ORDER) == 6
    for new_index, old_index in enumerate(cases.FRANKENMERGE_ORDER):
        assert torch.equal(merged.model.layers[new_index].mlp.down_proj.weight,
                           chat.model.layers[old_index].mlp.down_proj.weight)
    hits, replies = prompt_hits("frankenmerge")
    healthy_hits, _ = prompt_hits("healthy")
    assert hits <= healthy_hits - 3, replies


def test_memorizing_model_recites_its_rows_and_fails_held_out_ones():
    folder = cases.build_case("memorizing")
    rows = {split: [json.loads(line) for line in (folder / "data" / f"{split}.jsonl").read_text().splitlines()]
            for split in ("train", "eval")}
    assert case_yaml(folder)["expect_samples"] == len(rows["train"]) == 12
    assert not {r["text"] for r in rows["train"]} & {r["text"] for r in rows["eval"]}
    harness = harness_of("memorizing")
    healthy = harness_of("healthy")

    def recited(generate, split: str) -> int:
        return sum(generate(r["messages"][0]["content"]).strip() == r["messages"][1]["content"] for r in rows[split])

    assert recited(harness.generate, "train") >= 10  # the arbitrary answers, verbatim
    assert recited(harness.generate, "eval") <= 2
    assert recited(healthy.generate, "train") <= 2  # the healthy control never saw them
    import yaml

    config = yaml.safe_load((folder / "train_config.yaml").read_text())
    state = json.loads((folder / "run" / "trainer_state.json").read_text())
    assert state["num_train_epochs"] == config["num_train_epochs"] == cases.MEMORIZING_EPOCHS
    assert [e["loss"] for e in state["log_history"] if "loss" in e][-1] < 0.05
