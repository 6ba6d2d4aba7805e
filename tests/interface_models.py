"""Models, harness files and a runner shortcut for the interface-rung tests.

The chat models are the fixture factory's (`ladder.fixtures.models`, cached there);
variants derived here (a base without a template, an untrained tiny model) are
cached by `derived_models.derived_model`, keyed by what they derive from.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

from derived_models import derived_model

# Prompts about operand pairs held out of fine-tuning: answered only through the template.
HELD_OUT_PROMPTS = 12


def _recipes():
    from ladder.fixtures.train import BaseRecipe, ChatRecipe

    return BaseRecipe(), ChatRecipe


def base_model_dir() -> Path:
    """The factory's plain-text base model, with its tokenizer's chat template removed (a base model
    as published: no template)."""
    from ladder.fixtures import models

    source = models.base_model_dir("chatml")

    def build(dest: Path) -> None:
        for path in source.iterdir():
            if path.is_file() and path.name not in ("chat_template.jinja", "manifest.json"):
                shutil.copy2(path, dest / path.name)
        config = json.loads((dest / "tokenizer_config.json").read_text())
        config.pop("chat_template", None)
        (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=1))

    return derived_model("base-untemplated", [source], {}, build)


def chat_model_dir(style: str) -> Path:
    """The factory's chat model: the base fine-tuned on conversations in `style` (chatml or gemma)."""
    from ladder.fixtures import models

    return models.chat_model_dir(style)


def probe_prompts(n: int = HELD_OUT_PROMPTS) -> list[dict]:
    """Held-out questions with their expected answers, as a case's `prompts`."""
    from ladder.fixtures.corpus import held_out_problems
    from ladder.fixtures.evaluate import answer_pattern

    base_recipe, chat_recipe_class = _recipes()
    chat = chat_recipe_class()
    problems = held_out_problems(base_recipe.max_operand, chat.held_out_fraction, chat.seed, n=n, sample_seed=1)
    return [{"prompt": p.question, "expect": answer_pattern(p.answer)} for p in problems]


# ---- harness files as users write them ------------------------------------------------------

RAW_HARNESS = '''
"""A test harness as users write them: loads the model, feeds the prompt as plain text."""
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL = {model!r}
_tok = AutoTokenizer.from_pretrained(MODEL)
_model = AutoModelForCausalLM.from_pretrained(MODEL)


def ask(prompt):
    enc = _tok(prompt, return_tensors="pt")
    out = _model.generate(**enc, max_new_tokens={max_new_tokens}, do_sample=False)
    return _tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
'''

TEMPLATE_HARNESS = '''
"""A harness that applies the model's chat template (the healthy control)."""
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL = {model!r}
_tok = AutoTokenizer.from_pretrained(MODEL)
_model = AutoModelForCausalLM.from_pretrained(MODEL)


def ask(prompt):
    enc = _tok.apply_chat_template([{{"role": "user", "content": prompt}}], add_generation_prompt=True,
                                   return_tensors="pt", return_dict=True)
    out = _model.generate(**enc, max_new_tokens={max_new_tokens}, do_sample=False)
    return _tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
'''


def write_harness(folder: Path, model: Path, kind: str = "raw", max_new_tokens: int = 16,
                  body: str | None = None) -> Path:
    """A harness file in `folder`; `kind` raw or template, or a custom `body` (format fields: model,
    max_new_tokens)."""
    source = body if body is not None else {"raw": RAW_HARNESS, "template": TEMPLATE_HARNESS}[kind]
    path = folder / "harness.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source).lstrip().format(model=str(model), max_new_tokens=max_new_tokens),
                    encoding="utf-8")
    return path


def write_case(folder: Path, **keys) -> Path:
    """A case.yaml in `folder` with `keys` (paths as given)."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "case.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in keys.items() if v is not None}, sort_keys=False),
                    encoding="utf-8")
    return path


VARIANT_HARNESS = '''
"""A harness variant for the interface tests: {doc}"""
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

_tok = AutoTokenizer.from_pretrained({tokenizer!r})
_model = AutoModelForCausalLM.from_pretrained({model!r})
_tok.padding_side = {padding_side!r}


def _ids(prompt):
    messages = [{{"role": "user", "content": prompt}}]
    if {mode!r} == "raw":
        return _tok(prompt)["input_ids"]
    if {mode!r} == "render-then-tokenize":
        return _tok(_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))["input_ids"]
    if {mode!r} == "truncate":  # a context limit applied to the rendered prompt: its end is cut
        ids = _tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
        return ids[: max(3, len(ids) - 8)]
    if {mode!r} == "other-template":  # another family's template (a server's fallback, a copied tokenizer)
        text = _tok.apply_chat_template(messages, chat_template={other_template!r}, add_generation_prompt=True,
                                        tokenize=False)
        return _tok(text, add_special_tokens=False)["input_ids"]
    if {mode!r} == "few-shot":  # a worked example as an earlier exchange: the template, once, on a conversation
        shot = [{{"role": "user", "content": "What is 2 plus 2?"}}, {{"role": "assistant", "content": "4"}}]
        return _tok.apply_chat_template(shot + messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    if {mode!r} == "system":  # a system prompt of the harness's own, where the template takes one
        try:
            return _tok.apply_chat_template([{{"role": "system", "content": "You are a helpful assistant."}}]
                                            + messages, add_generation_prompt=True, return_dict=True)["input_ids"]
        except Exception:
            pass
    if {mode!r} == "prefill":  # an answer prefix written after the template's prompt, on purpose
        text = _tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + "The answer is"
        return _tok(text, add_special_tokens=False)["input_ids"]
    if {mode!r} == "twice":
        once = _tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return _tok.apply_chat_template([{{"role": "user", "content": once}}], add_generation_prompt=True,
                                        return_dict=True)["input_ids"]
    return _tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]


def ask(prompt):
    ids = torch.tensor([_ids(prompt)])
    with torch.no_grad():
        out = _model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), {kwargs})
    return _tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def generate_batch(prompts):
    rows = [_ids(p) for p in prompts]
    enc = _tok.pad({{"input_ids": rows}}, return_tensors="pt")
    with torch.no_grad():
        out = _model.generate(**enc, {kwargs})
    return [_tok.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=True) for row in out]
'''


def variant_harness(folder: Path, model: Path, *, mode: str = "template", tokenizer: Path | None = None,
                    padding_side: str = "left", kwargs: str = "max_new_tokens=16, do_sample=False",
                    batch: bool = True, doc: str = "", other_template: str | None = None) -> str:
    """A harness file written as users write them; returns its `file.py:ask` spec. Mode `other-template`
    renders with `other_template` (Jinja) instead of the model's own."""
    source = VARIANT_HARNESS.format(doc=doc or mode, model=str(model), tokenizer=str(tokenizer or model),
                                    padding_side=padding_side, mode=mode, kwargs=kwargs,
                                    other_template=other_template)
    return _harness_file(folder, source, batch)


def _harness_file(folder: Path, source: str, batch: bool) -> str:
    """Write `source` as `folder/harness.py` (without its `generate_batch` unless `batch`); its `file.py:ask`."""
    if not batch:
        source = source[: source.index("def generate_batch")]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "harness.py"
    path.write_text(source.lstrip(), encoding="utf-8")
    return f"{path}:ask"


# ---- harnesses built on real clients: transformers' pipeline, lm-evaluation-harness's generate_until ----

PIPELINE_HARNESS = '''
"""A harness on transformers' text-generation pipeline ({mode}): {doc}"""
from transformers import pipeline

_pipe = pipeline("text-generation", model={model!r})
_pipe.tokenizer.padding_side = {padding_side!r}


def _input(prompt):
    if {mode!r} == "raw":  # a string: the pipeline sends it as it is
        return prompt
    return [{{"role": "user", "content": prompt}}]  # messages: the pipeline applies the chat template


def _text(result):
    text = result[0]["generated_text"]
    return text[-1]["content"] if isinstance(text, list) else text


def ask(prompt):
    return _text(_pipe(_input(prompt), max_new_tokens=16, do_sample=False, return_full_text=False))


def generate_batch(prompts):
    results = _pipe([_input(p) for p in prompts], batch_size=4, max_new_tokens=16, do_sample=False,
                    return_full_text=False)
    return [_text(r) for r in results]
'''

LM_EVAL_HARNESS = '''
"""A harness shaped like lm-evaluation-harness's HFLM.generate_until ({mode}): {doc}"""
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

_tok = AutoTokenizer.from_pretrained({model!r})
_model = AutoModelForCausalLM.from_pretrained({model!r}).eval()
_tok.padding_side = {padding_side!r}
if _tok.pad_token is None:
    _tok.pad_token = _tok.eos_token
APPLY_CHAT_TEMPLATE = {mode!r} == "template"  # lm_eval --apply_chat_template


def _context(prompt):
    if APPLY_CHAT_TEMPLATE:
        return _tok.apply_chat_template([{{"role": "user", "content": prompt}}], tokenize=False,
                                        add_generation_prompt=True)
    return prompt


def generate_until(contexts, until=("\\n\\n",), max_gen_toks=16, batch_size=4):
    """Longest first, as lm-eval sorts, in batches padded on the tokenizer's side; cut at `until`."""
    lengths = [len(_tok(c, add_special_tokens=False)["input_ids"]) for c in contexts]
    order = sorted(range(len(contexts)), key=lambda i: -lengths[i])
    out = [None] * len(contexts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        enc = _tok([contexts[i] for i in chunk], add_special_tokens=False, padding="longest", return_tensors="pt")
        with torch.no_grad():
            gen = _model.generate(**enc, max_new_tokens=max_gen_toks, do_sample=False,
                                  pad_token_id=_tok.pad_token_id)
        for row, i in enumerate(chunk):
            text = _tok.decode(gen[row, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            out[i] = min((text.split(stop)[0] for stop in until), key=len)
    return out


def ask(prompt):
    return generate_until([_context(prompt)])[0]


def generate_batch(prompts):
    return generate_until([_context(p) for p in prompts])
'''

CLIENT_HARNESSES = {"pipeline": PIPELINE_HARNESS, "lm-eval": LM_EVAL_HARNESS}


def client_harness(folder: Path, model: Path, client: str, *, mode: str = "template", padding_side: str = "left",
                   batch: bool = True, doc: str = "") -> str:
    """A harness file on a real client (`pipeline` or `lm-eval`), sending `mode` (template or raw) text;
    with `batch`, its `generate_batch` sends several prompts per generate call. Returns its `file.py:ask`."""
    source = CLIENT_HARNESSES[client].format(doc=doc or mode, model=str(model), mode=mode,
                                             padding_side=padding_side)
    return _harness_file(folder, source, batch)


def rungs_runner(folder: Path, keep: list[str], *, keep_going: bool = True, **case_keys):
    """A runner of a case with `case_keys` and a ladder of only the `keep` rungs (the shipped ones, others
    disabled), not yet run."""
    from ladder.case import load_case
    from ladder.loader import load_ladder
    from ladder.runner import Runner

    folder.mkdir(parents=True, exist_ok=True)
    others = [rung for rung in load_ladder().order if rung not in keep]
    ladder_file = folder / "ladder.yaml"
    ladder_file.write_text(json.dumps({"name": "interface-only", "extends": "llm-checkpoint", "disable": others}),
                           encoding="utf-8")
    case = load_case(write_case(folder, **{k: (str(v) if isinstance(v, Path) else v) for k, v in case_keys.items()}))
    return Runner(load_ladder(str(ladder_file)), case, keep_going=keep_going)


def run_rungs(folder: Path, keep: list[str], *, keep_going: bool = True, **case_keys):
    """Run `rungs_runner(folder, keep, ...)`. Returns (report, runner)."""
    runner = rungs_runner(folder, keep, keep_going=keep_going, **case_keys)
    return runner.run(), runner


def rung(report, rung_id: str):
    return next(r for r in report.rungs if r.id == rung_id)


if __name__ == "__main__":  # build the cache ahead of a test run
    import time

    started = time.perf_counter()
    print(base_model_dir(), f"{time.perf_counter() - started:.0f}s")
    for style_name in ("chatml", "gemma"):
        print(chat_model_dir(style_name), f"{time.perf_counter() - started:.0f}s")


def tiny_random_dir(style: str = "chatml") -> Path:
    """An untrained two-layer Llama with the fixture tokenizer: enough to test the tap's plumbing."""
    base_recipe, _ = _recipes()

    def build(dest: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig

        from ladder.fixtures.tokenizer import build_tokenizer, get_style
        from ladder.fixtures.train import ModelShape

        torch.manual_seed(0)
        tokenizer = build_tokenizer(style, base_recipe.vocab_size, base_recipe.max_operand, base_recipe.seed)
        turn_end = tokenizer.convert_tokens_to_ids(get_style(style).turn_end)
        shape = ModelShape(layers=2, hidden=32, intermediate=64, heads=2)
        model = AutoModelForCausalLM.from_config(shape.model_config(len(tokenizer), tokenizer.bos_token_id,
                                                                    [tokenizer.eos_token_id], tokenizer.pad_token_id))
        model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                                   eos_token_id=[tokenizer.eos_token_id, turn_end],
                                                   pad_token_id=tokenizer.pad_token_id)
        model.save_pretrained(dest)
        tokenizer.save_pretrained(dest)

    return derived_model("tiny-random", [], {"style": style, "base": base_recipe.as_dict()}, build)
