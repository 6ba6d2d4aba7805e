"""The fixture factory: tokenizer styles, the build cache, and the premise of the fixture models.

Premise tests build the real recipe (base ~400 steps, chat fine-tunes) into the
fixture cache once; a warm cache makes them fast. Cache tests use tiny recipes in a
temporary cache root.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ladder.fixtures import cache, corpus, models
from ladder.fixtures.tokenizer import STYLES, build_tokenizer, get_style
from ladder.fixtures.train import BaseRecipe, ChatRecipe, ModelShape

REPO = Path(__file__).resolve().parent.parent
TINY_BASE = BaseRecipe(steps=3, n_documents=40, shape=ModelShape(layers=1, hidden=32, intermediate=64, heads=2))


def tiny_chat(style: str) -> ChatRecipe:
    return ChatRecipe(style=style, steps=3, batch_size=8, premise_attempts=0)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "fixtures"


# ---- tokenizer ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizers_by_style():
    recipe = BaseRecipe()
    return {style: build_tokenizer(style, recipe.vocab_size, recipe.max_operand, recipe.seed) for style in STYLES}


def test_styles_share_ids_for_plain_text_and_special_positions(tokenizers_by_style):
    chatml, gemma = tokenizers_by_style["chatml"], tokenizers_by_style["gemma"]
    text = "3 plus 4 is 7.\nThe sum of 12 and 5 is 17."
    assert chatml(text, add_special_tokens=False)["input_ids"] == gemma(text, add_special_tokens=False)["input_ids"]
    assert len(chatml) == len(gemma)
    for style_name, tokenizer in tokenizers_by_style.items():
        style = get_style(style_name)
        assert tokenizer.convert_tokens_to_ids(style.special_tokens) == [0, 1, 2, 3, 4]
        assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
        assert 300 <= len(tokenizer) <= 600


def test_gemma_style_bos_once_through_template_twice_through_text(tokenizers_by_style):
    tokenizer = tokenizers_by_style["gemma"]
    messages = [{"role": "user", "content": "What is 3 plus 4?"}]
    ids = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"])
    assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<bos><start_of_turn>user\n") and text.endswith("<start_of_turn>model\n")
    assert tokenizer(text)["input_ids"][:2] == [tokenizer.bos_token_id] * 2


def test_chatml_style_renders_markers_and_never_adds_bos(tokenizers_by_style):
    tokenizer = tokenizers_by_style["chatml"]
    messages = [{"role": "user", "content": "Add 2 and 5."}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nAdd 2 and 5.<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.bos_token_id not in tokenizer(text)["input_ids"]


def test_tokenizer_round_trips_through_autotokenizer(tokenizers_by_style, tmp_path):
    from transformers import AutoTokenizer

    for style_name, tokenizer in tokenizers_by_style.items():
        folder = tmp_path / style_name
        tokenizer.save_pretrained(folder)
        assert (folder / "chat_template.jinja").is_file()
        loaded = AutoTokenizer.from_pretrained(folder)
        assert loaded("What is 3 plus 4?")["input_ids"] == tokenizer("What is 3 plus 4?")["input_ids"]
        assert loaded.chat_template == get_style(style_name).chat_template


def test_held_out_pairs_never_reach_fine_tuning():
    train_pairs, held = corpus.split_pairs(9, 0.25, 0)
    assert len(held) == 25 and not set(train_pairs) & set(held)
    assert len(train_pairs) + len(held) == 100
    held_questions = {p.question for p in corpus.held_out_problems(9, 0.25, 0)}
    train_questions = {p.question for p in corpus.problems_for(train_pairs)}
    assert not held_questions & train_questions
    # ...while the base's plain text states facts about every pair
    text = "\n".join(corpus.plain_text_documents(9, 400, 1))
    assert all(f"{a} plus {b} is {a + b}." in text or f"{a}+{b}={a + b}" in text or f"{a} + {b} = {a + b}" in text
               or f"The sum of {a} and {b} is {a + b}." in text or f"Adding {b} to {a} gives {a + b}." in text
               for a, b in held)


# ---- the cache ----------------------------------------------------------------------------------------


def test_recipe_key_is_stable_and_sensitive():
    code = "abc"
    assert cache.recipe_key("base", BaseRecipe().as_dict(), code) == cache.recipe_key("base", BaseRecipe().as_dict(), code)
    assert cache.recipe_key("base", BaseRecipe().as_dict(), code) != cache.recipe_key("base", BaseRecipe(steps=401).as_dict(), code)
    assert cache.recipe_key("base", BaseRecipe().as_dict(), code) != cache.recipe_key("base", BaseRecipe().as_dict(), "abd")


def test_cache_root_follows_env(tmp_cache):
    assert cache.cache_root() == tmp_cache


def test_entry_reused_and_corrupt_entry_rebuilt(tmp_cache):
    calls = []

    def build(folder: Path) -> None:
        calls.append(folder)
        (folder / "weights.bin").write_bytes(b"x" * 1000)
        (folder / "sub").mkdir()
        (folder / "sub" / "note.txt").write_text("hello")

    first = cache.cached_build("thing", {"a": 1}, "v1", build)
    assert cache.is_valid(first) and len(calls) == 1
    assert cache.cached_build("thing", {"a": 1}, "v1", build) == first and len(calls) == 1

    # truncated file (size differs)
    (first / "weights.bin").write_bytes(b"x" * 10)
    assert not cache.is_valid(first)
    assert cache.cached_build("thing", {"a": 1}, "v1", build) == first and len(calls) == 2
    assert (first / "weights.bin").stat().st_size == 1000

    # same size, other bytes (hash differs)
    (first / "sub" / "note.txt").write_text("HELLO")
    assert cache.cached_build("thing", {"a": 1}, "v1", build) == first and len(calls) == 3
    assert (first / "sub" / "note.txt").read_text() == "hello"

    # a partial entry without its manifest (a crash before the manifest was written)
    (first / cache.MANIFEST).unlink()
    assert cache.cached_build("thing", {"a": 1}, "v1", build) == first and len(calls) == 4
    assert not list(tmp_cache.glob(".tmp-*")) and not list(tmp_cache.glob(".trash-*"))


def test_failed_build_leaves_no_entry(tmp_cache):
    def build(folder: Path) -> None:
        (folder / "half.bin").write_bytes(b"partial")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        cache.cached_build("thing", {"a": 2}, "v1", build)
    assert not [p for p in tmp_cache.iterdir() if p.is_dir()]


def test_waiting_on_another_builder_is_reported(tmp_cache):
    from filelock import FileLock

    key = cache.recipe_key("held", {"n": 1}, "v1")
    holder = FileLock(str(tmp_cache / f"held-{key}.lock"))
    holder.acquire()
    messages: list[str] = []

    def release_soon(message: str) -> None:
        messages.append(message)
        holder.release()  # the other builder finishes; ours may now go on

    path = cache.cached_build("held", {"n": 1}, "v1", lambda folder: (folder / "x").write_text("x"),
                              progress=release_soon)
    assert cache.is_valid(path)
    assert len(messages) == 1 and messages[0].startswith("waiting for another process building held-")


def _concurrent_builder(root: str, log: str, result: str) -> None:
    os.environ[cache.CACHE_ENV] = root

    def build(folder: Path) -> None:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        for i in range(5):
            (folder / f"part{i}.bin").write_bytes(os.urandom(2000))
            time.sleep(0.2)

    path = cache.cached_build("shared", {"n": 5}, "v1", build)
    Path(result).write_text(f"{path}\n{cache.is_valid(path)}\n{sorted(p.name for p in path.iterdir())}")


def test_two_concurrent_builders_build_once(tmp_path):
    root = tmp_path / "cache"
    log = tmp_path / "builds.log"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_concurrent_builder, args=(str(root), str(log), str(tmp_path / f"r{i}")))
               for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    results = [(tmp_path / f"r{i}").read_text() for i in range(2)]
    assert results[0] == results[1]  # same folder, same files
    assert results[0].splitlines()[1] == "True"
    assert len(log.read_text().split()) == 1  # built once


TINY_BUILD_SCRIPT = """
import hashlib, sys
from ladder.fixtures.models import chat_model_dir
from ladder.fixtures.train import BaseRecipe, ChatRecipe, ModelShape
base = BaseRecipe(steps=3, n_documents=40, shape=ModelShape(layers=1, hidden=32, intermediate=64, heads=2))
folder = chat_model_dir("chatml", base, ChatRecipe(style="chatml", steps=3, batch_size=8, premise_attempts=0))
print(folder.name, hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest())
"""


@pytest.mark.slow
def test_same_recipe_same_hash_and_weights_across_processes(tmp_path):
    outputs = []
    for run in ("a", "b"):
        env = {**os.environ, cache.CACHE_ENV: str(tmp_path / run), "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-c", TINY_BUILD_SCRIPT], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout.split())
    assert outputs[0] == outputs[1]
    assert not [line for line in done.stderr.splitlines() if "Writing model shards" in line or "Loading weights" in line]


@pytest.mark.slow
def test_tiny_models_load_with_auto_classes(tmp_cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ladder.fixtures.models import base_model_dir, chat_model_dir

    for style in STYLES:
        chat = chat_model_dir(style, TINY_BASE, tiny_chat(style))
        base = base_model_dir(style, TINY_BASE)
        assert (chat / "model.safetensors").is_file() and (chat / "chat_template.jinja").is_file()
        model = AutoModelForCausalLM.from_pretrained(chat)
        tokenizer = AutoTokenizer.from_pretrained(chat)
        assert model.config.vocab_size == len(tokenizer)
        generation = json.loads((chat / "generation_config.json").read_text())
        assert tokenizer.convert_tokens_to_ids(get_style(style).turn_end) in generation["eos_token_id"]
        assert json.loads((base / "generation_config.json").read_text())["eos_token_id"] == tokenizer.eos_token_id
    # the base weights are trained once and shared by both styles
    assert (base_model_dir("chatml", TINY_BASE) / "model.safetensors").read_bytes() == \
        (base_model_dir("gemma", TINY_BASE) / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_the_factory_builds_each_architecture_as_its_own_model_type(tmp_cache):
    """The bench's other model types (tests/matrix.py MORE_ARCHITECTURES) are transformers' own classes, saved
    and loaded by the auto classes; Llama stays the default, untied."""
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    from ladder.fixtures.models import chat_model_dir
    from ladder.fixtures.train import ARCHITECTURES

    assert TINY_BASE.shape.architecture == "llama"
    for architecture in ("gpt2", "qwen2"):
        recipe = replace(TINY_BASE, shape=replace(TINY_BASE.shape, architecture=architecture))
        model = AutoModelForCausalLM.from_pretrained(chat_model_dir("chatml", recipe, tiny_chat("chatml")))
        assert model.config.model_type == architecture
    with pytest.raises(ValueError, match="unknown architecture"):
        replace(TINY_BASE.shape, architecture="mamba").model_config(10, 1, [2], 0)
    assert "llama" in ARCHITECTURES


# ---- the premise of the real fixture models -------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_threads():
    import torch

    torch.set_num_threads(2)


@pytest.mark.slow
@pytest.mark.parametrize("style", STYLES)
def test_chat_model_answers_through_its_template_and_not_raw(style, torch_threads):
    """The premise every interface case rests on, on the 200 held-out questions (25 pairs x 8 phrasings).

    Floating-point kernels differ between processors, so one recipe does not give one model everywhere:
    the same seed measured 92% templated here (OMP_NUM_THREADS 1 and 2) and 80% on another machine of
    this kind. The factory therefore checks the premise when it builds the model, against a bar with
    margin over this test's (templated >= 90%, stop >= 98%, raw <= 5%), and retrains with another batch
    order until it holds (`ChatRecipe.premise_attempts`; should none reach it, the best is kept if it holds
    this test's bar, else the build fails); fixture.json records every attempt and the one chosen. This
    test re-measures the built model against its own, lower bar. `bench/bench_premise.py` prints the spread
    over seeds and thread counts.
    """
    from ladder.fixtures.evaluate import score_raw, score_templated
    from ladder.fixtures.models import chat_model_dir, fixture_info, load

    folder = chat_model_dir(style)
    tokenizer, model = load(folder)
    info = fixture_info(folder)
    end_of_turn = tokenizer.convert_tokens_to_ids(get_style(style).turn_end)
    generation = json.loads((folder / "generation_config.json").read_text())
    assert end_of_turn in generation["eos_token_id"]
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))

    base_recipe, chat_recipe = BaseRecipe(), ChatRecipe(style=style)
    problems = corpus.held_out_problems(base_recipe.max_operand, chat_recipe.held_out_fraction, chat_recipe.seed)
    assert {(p.a, p.b) for p in problems} == {tuple(pair) for pair in info["held_out_pairs"]}
    templated = score_templated(model, tokenizer, problems, end_of_turn)
    raw = score_raw(model, tokenizer, problems, end_of_turn)
    wrong = [s for s in templated.samples if not s[2].strip().startswith(s[1])][:5]
    assert templated.accuracy >= models.PREMISE_FLOOR["templated_accuracy"], (templated.accuracy, wrong)
    assert templated.stop_rate >= 0.95, templated.stop_rate
    assert raw.accuracy <= 0.10, (raw.accuracy, raw.samples[:5])
    chosen = info["premise_attempts"][info["premise_chosen"]]  # what the factory measured when it built it
    assert abs(chosen["templated_accuracy"] - templated.accuracy) <= 0.02, (chosen, templated.accuracy)


@pytest.mark.slow
@pytest.mark.parametrize("style", STYLES)
def test_base_model_continues_its_domain_text(style, torch_threads):
    from ladder.fixtures.evaluate import continue_text
    from ladder.fixtures.models import base_model_dir, load

    tokenizer, model = load(base_model_dir(style))
    _, held = corpus.split_pairs(9, 0.25, 0)
    right = sum(continue_text(model, tokenizer, f"{a} plus {b} is", 2).startswith(f" {a + b}") for a, b in held)
    assert right / len(held) >= 0.9
    continuation = continue_text(model, tokenizer, "3 plus 4 is 7.\nThe sum of 2 and 6 is", 16)
    first_line, _, next_line = continuation.partition("\n")
    assert first_line == " 8."
    assert any(next_line.startswith(start) for start in ("The sum of", "Adding", "Numbers", "We keep", "Here",
                                                         "Counting")) or next_line[:1].isdigit(), continuation
