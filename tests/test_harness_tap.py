"""The harness tap: what it records, that it restores everything, and how harness failures come back."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from interface_models import tiny_random_dir
from ladder.harness.run import read_transcript, run_command, run_function
from ladder.harness.tap import Tap

pytestmark = pytest.mark.slow

HARNESS = '''
from transformers import AutoModelForCausalLM, AutoTokenizer

_tok = AutoTokenizer.from_pretrained({model!r})
_model = AutoModelForCausalLM.from_pretrained({model!r})


def ask(prompt):
    enc = _tok(prompt, return_tensors="pt")
    out = _model.generate(**enc, max_new_tokens=5, do_sample=False, repetition_penalty=1.3)
    return _tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def generate_batch(prompts):
    _tok.padding_side = "right"
    enc = _tok(prompts, return_tensors="pt", padding=True)
    out = _model.generate(**enc, max_new_tokens=3, do_sample=False)
    return [_tok.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=True) for row in out]
'''


@pytest.fixture(scope="module")
def tiny() -> Path:
    return tiny_random_dir()


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def patched_objects():
    from transformers import AutoTokenizer, GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase

    return {(owner.__name__, name): owner.__dict__.get(name)
            for owner, name in ((GenerationMixin, "generate"), (PreTrainedModel, "from_pretrained"),
                                (PreTrainedTokenizerBase, "from_pretrained"), (AutoTokenizer, "from_pretrained"),
                                (PreTrainedModel, "__call__"))}


def test_tap_restores_everything_it_patched_also_when_the_harness_raises(tiny):
    before = patched_objects()
    with Tap():
        during = patched_objects()
    assert all(during[key] is not before[key] for key in before), "the tap patches all five"
    assert before[("PreTrainedModel", "__call__")] is None, "a model's call is nn.Module's, inherited again after"
    assert patched_objects() == before
    with pytest.raises(RuntimeError):
        with Tap():
            raise RuntimeError("harness blew up")
    assert patched_objects() == before


def test_function_harness_records_ids_kwargs_effective_config_and_loads(tiny, tmp_path):
    from transformers import AutoTokenizer

    harness = write(tmp_path / "h.py", HARNESS.format(model=str(tiny)))
    before = patched_objects()
    run = run_function(f"{harness}:ask", ["What is 2 plus 3?", "Add 4 and 5."], batch=True)
    assert patched_objects() == before
    assert run.ok, run.error
    assert [c["prompt"] for c in run.calls] == ["What is 2 plus 3?", "Add 4 and 5."]
    record = run.sent(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    assert record["input_ids"] == [tokenizer("What is 2 plus 3?")["input_ids"]]
    assert record["attention_mask"] == [[1] * len(record["input_ids"][0])]
    assert record["input_text"] == ["What is 2 plus 3?"]
    assert record["generate_kwargs"]["max_new_tokens"] == 5
    assert record["generate_kwargs"]["repetition_penalty"] == 1.3
    effective = record["effective_generation_config"]
    # merged: the kwargs over generation_config.json, whose eos ids (two of them) survive
    assert effective["max_new_tokens"] == 5 and effective["repetition_penalty"] == 1.3
    assert effective["eos_token_id"] == record["model_generation_config"]["eos_token_id"]
    assert len(effective["eos_token_id"]) == 2
    assert record["training"] is False and record["dtype"] == "torch.float32"
    assert len(record["output_ids"][0]) <= 5
    assert run.calls[0]["output"] == tokenizer.decode(record["output_ids"][0], skip_special_tokens=True)
    loads = {(load["kind"], load["path"]) for load in run.loads}
    assert loads == {("model", str(tiny)), ("tokenizer", str(tiny))}, "only the outermost loads are recorded"
    assert all(load["label"] == "import" for load in run.loads)
    batch = run.batch["generate"][0]
    assert run.batch["entry_point"] == "generate_batch" and len(run.batch["outputs"]) == 2
    assert batch["tokenizer"]["padding_side"] == "right"
    assert 0 in batch["attention_mask"][1][-2:] or 0 in batch["attention_mask"][0][-2:], "right padded"


def test_a_function_that_takes_a_list_of_prompts_is_called_with_one(tiny, tmp_path):
    """`generate(prompts: list[str]) -> list[str]`, the shape of many eval scripts: called with a string it
    runs on the characters; it is called again with a list of one prompt, and that is what is recorded."""
    from transformers import AutoTokenizer

    harness = write(tmp_path / "h.py", HARNESS.format(model=str(tiny)) + """

def generate(prompts):
    return [ask(p) for p in prompts]

def unnamed(p):
    return [ask(q) for q in p]

def candidates(prompt):
    return [ask(prompt), ask(prompt)]

def evaluate(x: list[str]):
    return [ask(p) for p in x]
""")
    asked = AutoTokenizer.from_pretrained(tiny)("What is 2 plus 3?")["input_ids"]
    for function in ("generate", "evaluate"):  # named like a list of prompts; annotated as one
        run = run_function(f"{harness}:{function}", ["What is 2 plus 3?"])
        assert run.ok and run.calls[0]["called_with"] == "a list of one prompt"
        assert isinstance(run.calls[0]["output"], str) and len(run.calls[0]["generate"]) == 1
        assert run.sent(0)["input_ids"] == [asked]
    found = run_function(f"{harness}:unnamed", ["What is 2 plus 3?"])  # found by what it returns
    assert found.calls[0]["called_with"] == "a list of one prompt" and found.sent(0)["input_ids"] == [asked]
    kept = run_function(f"{harness}:candidates", ["What is 2 plus 3?"])
    assert "called_with" not in kept.calls[0] and kept.calls[0]["output_type"] == "list"
    assert len(kept.calls[0]["generate"]) == 2, "a function that returns a list for one prompt keeps its record"


def test_a_function_that_takes_chat_messages_is_called_with_one_user_message(tiny, tmp_path):
    """`chat(messages: list[dict]) -> str`, the shape of chat eval scripts: called with a string (or a list of
    one) it raised, and that harness error blocked the whole walk. It is called with the prompt as one user
    message: declared by its annotation or parameter name, or found when the text and list calls raise."""
    from transformers import AutoTokenizer

    harness = write(tmp_path / "h.py", HARNESS.format(model=str(tiny)) + """

def _as_text(conversation):
    return "\\n".join(m["content"] for m in conversation)

def chat(messages: list[dict]) -> str:
    return ask(_as_text(messages))

def named(history):
    return ask(_as_text(history))

def unnamed(x):
    return ask(_as_text(x))

def broken(messages):
    raise RuntimeError("out of memory")

def text_named_like_a_chat(history: str):
    return ask(f"{history}")
""")
    asked = AutoTokenizer.from_pretrained(tiny)("What is 2 plus 3?")["input_ids"]
    for function in ("chat", "named", "unnamed"):
        run = run_function(f"{harness}:{function}", ["What is 2 plus 3?"])
        assert run.ok, (function, run.error)
        assert run.calls[0]["called_with"] == "the prompt as one user message (a chat)", function
        assert run.sent(0)["input_ids"] == [asked] and len(run.calls[0]["generate"]) == 1, function
    failed = run_function(f"{harness}:broken", ["What is 2 plus 3?"])
    assert not failed.ok and "out of memory" in failed.error["message"], "the declared form's error stands"
    plain = run_function(f"{harness}:ask", ["What is 2 plus 3?"])
    assert "called_with" not in plain.calls[0], "a text harness is called with text"
    annotated = run_function(f"{harness}:text_named_like_a_chat", ["What is 2 plus 3?"])
    assert "called_with" not in annotated.calls[0] and annotated.sent(0)["input_ids"] == [asked], \
        "annotated as text: never handed messages (it would format their repr)"


def test_a_chat_ui_function_gets_an_empty_history_and_its_stream_of_the_reply_so_far_is_read_once(tiny, tmp_path):
    """Gradio's ChatInterface shape, `respond(message, history)`, yielding the reply so far at each step: it
    raised for want of a history, and a stream of growing texts joined piece by piece repeats the reply."""
    harness = write(tmp_path / "h.py", HARNESS.format(model=str(tiny)) + """

def respond(message, history):
    assert history == []
    reply = ask(message)
    for end in range(1, len(reply) + 1):
        yield reply[:end]

def deltas(message, history=None):
    yield from ask(message)
""")
    plain = run_function(f"{harness}:ask", ["What is 2 plus 3?"]).calls[0]["output"]
    assert len(plain) > 1
    run = run_function(f"{harness}:respond", ["What is 2 plus 3?"])
    assert run.ok, run.error
    assert run.calls[0]["output"] == plain and run.calls[0]["called_with"].startswith("the prompt and an empty history")
    assert len(run.calls[0]["generate"]) == 1
    joined = run_function(f"{harness}:deltas", ["What is 2 plus 3?"])
    assert joined.calls[0]["output"] == plain and "called_with" not in joined.calls[0], "pieces are joined"


def test_an_async_or_streaming_harness_is_run_to_its_reply(tiny, tmp_path):
    """`async def ask(prompt)` (an AsyncOpenAI client, a generate run in a thread) returns a coroutine and a
    streaming harness a generator: both were recorded as an object's repr with no generate call, so every
    interface rung skipped (a raw-text async harness passed the walk). They are awaited / drained now."""
    harness = write(tmp_path / "h.py", HARNESS.format(model=str(tiny)) + """
import asyncio

async def ask_async(prompt):
    return await asyncio.to_thread(ask, prompt)

def stream(prompt):
    yield from ask(prompt).partition(" ")

async def stream_async(prompt):
    for piece in ask(prompt).partition(" "):
        yield piece

async def generate(prompts):
    return [ask(p) for p in prompts]

class Runner:
    async def ask(self, prompt):
        return ask(prompt)

runner = Runner()
""")
    plain = run_function(f"{harness}:ask", ["What is 2 plus 3?"])
    for function in ("ask_async", "stream", "stream_async", "generate", "runner.ask"):
        run = run_function(f"{harness}:{function}", ["What is 2 plus 3?"])
        assert run.ok and run.calls[0]["output"] == plain.calls[0]["output"], function
        assert "output_type" not in run.calls[0] and run.sent(0)["input_ids"] == plain.sent(0)["input_ids"], function


def test_a_structured_reply_is_read_as_its_text_and_a_list_guess_that_raises_is_dropped(tiny, tmp_path):
    """`return pipe(prompt)` gives `[{"generated_text": ...}]` (a chat pipeline: the messages, the assistant's
    last): a list, so ladder guessed a list-taking function and called it with `[prompt]`; a harness that puts
    its argument in a chat message raised on that guess, and the harness error blocked the walk. The guess is
    dropped when it raises; the structured reply is read as its text, as are a dict's and an OpenAI object's."""
    harness = write(tmp_path / "h.py", HARNESS.format(model=str(tiny)) + """
from types import SimpleNamespace
from transformers import pipeline

_pipe = pipeline("text-generation", model=_model, tokenizer=_tok)

def chat_pipeline(prompt):
    return _pipe([{"role": "user", "content": "Answer: " + prompt}], max_new_tokens=4, do_sample=False)

def as_dict(prompt):
    return {"prompt": prompt, "text": ask(prompt)}

def as_openai(prompt):
    return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=ask(prompt)))])
""")
    run = run_function(f"{harness}:chat_pipeline", ["What is 2 plus 3?"])
    assert run.ok, run.error
    assert "called_with" not in run.calls[0] and len(run.calls[0]["generate"]) == 1
    assert run.calls[0]["output_type"] == "list" and "generated_text" not in run.calls[0]["output"]
    plain = run_function(f"{harness}:ask", ["What is 2 plus 3?"]).calls[0]["output"]
    for function in ("as_dict", "as_openai"):
        assert run_function(f"{harness}:{function}", ["What is 2 plus 3?"]).calls[0]["output"] == plain, function


@pytest.mark.parametrize("returned, text", [
    ("hi", "hi"), ([{"generated_text": "hi"}], "hi"),
    ([{"generated_text": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "hi"}]}], "hi"),
    ({"choices": [{"message": {"role": "assistant", "content": "hi"}}]}, "hi"), ({"response": "hi"}, "hi"),
    (["a", "b"], None), ({"score": 0.5}, None), (3, None)])
def test_reply_text_finds_the_reply_in_the_shapes_harnesses_return(returned, text):
    from ladder.harness.run import reply_text

    assert reply_text(returned) == text


HAND_DECODING = """
import torch

@torch.no_grad()
def loop(prompt, cache=False, steps=4):
    ids = _tok(prompt, return_tensors="pt").input_ids
    step, past = ids, None
    for _ in range(steps):
        out = _model(input_ids=step, past_key_values=past, use_cache=cache)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, token], dim=1)
        step, past = (token, out.past_key_values) if cache else (ids, None)
    return _tok.decode(ids[0, -steps:], skip_special_tokens=True)

def no_cache(prompt):
    return loop(prompt)

@torch.no_grad()
def kv_cache_named_cache(prompt, steps=4):  # transformers' newer keyword: `cache=`, the output's `.cache`
    ids = _tok(prompt, return_tensors="pt").input_ids
    step, past = ids, None
    for _ in range(steps):
        out = _model(input_ids=step, cache=past, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, token], dim=1)
        step, past = token, out["cache"] if "cache" in out else out["past_key_values"]
    return _tok.decode(ids[0, -steps:], skip_special_tokens=True)

def kv_cache(prompt):
    return loop(prompt, cache=True)

def stops_at_once(prompt):
    return loop(prompt, steps=1 if prompt.startswith("Add") else 4)

def scores(prompt):
    with torch.no_grad():
        return float(_model(**_tok(prompt, return_tensors="pt")).logits.mean())

def scores_then_generates(prompt):
    scores(prompt)
    return ask(prompt)
"""


def test_a_harness_that_decodes_by_hand_is_recorded_by_its_forward_passes(tiny, tmp_path):
    """A decoding loop of the harness's own (`model(input_ids=...)` per token, with or without a KV cache)
    makes no generate call: the tap saw nothing and every interface rung skipped. Its first pass is the
    prompt sent, recorded once the next pass adds one token; a harness that only scores (one pass) is not
    taken for one, and a prompt's generate call wins over its passes."""
    harness = write(tmp_path / "h.py", HARNESS.format(model=str(tiny)) + HAND_DECODING)
    prompts = ["What is 2 plus 3?", "Add 4 and 5."]
    sent = run_function(f"{harness}:ask", prompts)
    for function in ("no_cache", "kv_cache", "kv_cache_named_cache"):
        run = run_function(f"{harness}:{function}", prompts)
        assert run.ok, run.error
        assert [len(c["generate"]) for c in run.calls] == [1, 1], function
        assert [run.sent(i)["input_ids"] for i in range(2)] == [sent.sent(i)["input_ids"] for i in range(2)]
        assert run.sent(0)["via"] == "forward" and "effective_generation_config" not in run.sent(0)
    once = run_function(f"{harness}:stops_at_once", prompts)
    assert once.sent(1)["input_ids"] == sent.sent(1)["input_ids"], "a model seen decoding by hand: one pass is enough"
    assert not any(c["generate"] for c in run_function(f"{harness}:scores", prompts).calls)
    both = run_function(f"{harness}:scores_then_generates", prompts)
    assert [[r.get("via") for r in c["generate"]] for c in both.calls] == [[None], [None]]


def test_redirect_loads_the_other_checkpoint_through_the_same_harness(tiny, tmp_path):
    other = tmp_path / "other"
    import shutil

    shutil.copytree(tiny, other)
    harness = write(tmp_path / "h.py", HARNESS.format(model=str(tiny)))
    run = run_function(f"{harness}:ask", ["Say hello."], redirect={str(tiny): str(other)})
    assert run.ok, run.error
    model_load = run.model_loads()[0]
    assert model_load["path"] == str(tiny) and model_load["redirected_to"] == str(other)
    assert run.sent(0)["model_path"] == str(other)
    assert run.tokenizer_loads()[0]["redirected_to"] is None, "tokenizers are part of the harness path"


@pytest.mark.parametrize("body, kind, needle", [
    ("import no_such_module_anywhere\ndef ask(p):\n    return p\n", "import", "no_such_module_anywhere"),
    ("def ask(p):\n    raise ValueError('broken harness ' + p)\n", "exception", "broken harness"),
    ("import time\ndef ask(p):\n    time.sleep(30)\n", "timeout", None),
])
def test_harness_failures_come_back_as_harness_errors_with_their_traceback(tmp_path, body, kind, needle):
    harness = write(tmp_path / "bad_harness.py", body)
    before = patched_objects()
    run = run_function(f"{harness}:ask", ["x"], timeout=1.0)
    assert patched_objects() == before
    assert run.error is not None and run.error["kind"] == kind
    if needle:
        assert needle in run.error["traceback"] and "bad_harness.py" in run.error["traceback"]
        assert "ladder/harness" not in run.error["traceback"], "ladder's own frames are left out"


def test_module_function_form_imports_from_the_working_directory(tmp_path, monkeypatch):
    write(tmp_path / "my_eval_mod.py", "def ask(p):\n    return p.upper()\n")
    monkeypatch.chdir(tmp_path)
    run = run_function("my_eval_mod:ask", ["abc"])
    assert run.ok and run.calls[0]["output"] == "ABC"
    assert "my_eval_mod" not in sys.modules, "imported fresh, not left behind"


def test_command_harness_gets_the_tap_injected_and_reports_back(tiny, tmp_path):
    script = write(tmp_path / "eval.py", '''
        import sys
        sys.path.insert(0, {here!r})
        import h
        print(h.ask(sys.argv[1]))
    '''.replace("{here!r}", repr(str(tmp_path))))
    write(tmp_path / "h.py", HARNESS.format(model=str(tiny)))
    run = run_command(f"{sys.executable} {script} {{prompt}}", ["What is 2 plus 3?", "it's quoted; $HOME"])
    assert run.ok, run.error
    assert run.calls[1]["prompt"] == "it's quoted; $HOME"
    assert run.sent(1)["input_text"] == ["it's quoted; $HOME"], "the prompt reached the model verbatim"
    assert run.sent(0)["generate_kwargs"]["max_new_tokens"] == 5
    assert {load["kind"] for load in run.loads} == {"model", "tokenizer"}
    reads_stdin = write(tmp_path / "chat.py", f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import h
        print(h.ask(sys.stdin.read()))
    """)
    piped = run_command(f"{sys.executable} {reads_stdin}", ["What is 2 plus 3?", "it's quoted; $HOME"])
    assert piped.ok and piped.calls[1]["prompt_on"] == "stdin", "a command without {prompt} reads it on stdin"
    assert [c["output"] for c in piped.calls] == [c["output"] for c in run.calls]
    assert piped.sent(1)["input_text"] == ["it's quoted; $HOME"]


def test_command_that_exits_non_zero_is_a_harness_error_with_its_stderr(tmp_path):
    script = write(tmp_path / "eval.py", "import sys\nsys.stderr.write('CUDA out of memory\\n')\nsys.exit(3)\n")
    run = run_command(f"{sys.executable} {script} {{prompt}}", ["x"])
    assert run.error["kind"] == "exit" and "CUDA out of memory" in run.error["stderr"]


def test_transcript_is_read_into_the_same_records(tmp_path):
    good = tmp_path / "t.jsonl"
    good.write_text(json.dumps({"prompt": "Hi", "input": "<|im_start|>user\nHi<|im_end|>\n", "output": "Hello"})
                    + "\n" + json.dumps({"input_ids": [1, 2, 3], "output_ids": [4, 2]}) + "\n", encoding="utf-8")
    run = read_transcript(str(good))
    assert run.ok and len(run.calls) == 2
    assert run.sent(0)["input_text"] == ["<|im_start|>user\nHi<|im_end|>\n"]
    assert run.sent(1)["input_ids"] == [[1, 2, 3]] and run.calls[1]["prompt"] is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"input": "ok"}) + "\n{not json\n", encoding="utf-8")
    run = read_transcript(str(bad))
    assert run.error["kind"] == "bad-transcript" and run.error["message"].endswith(":2: not JSON (Expecting property name enclosed in double quotes)")


def test_an_lm_eval_samples_file_is_a_transcript(tmp_path):
    """`lm_eval --log_samples` writes what generate_until sent and got: read as input and output."""
    sent = "<|im_start|>user\nWhat is 3 plus 4?<|im_end|>\n<|im_start|>assistant\n"
    samples = tmp_path / "samples_arith.jsonl"
    samples.write_text("\n".join(json.dumps(line) for line in (
        {"doc_id": 0, "doc": {"question": "What is 3 plus 4?"}, "target": "7",
         "arguments": {"gen_args_0": {"arg_0": sent, "arg_1": {"until": ["\n\n"], "max_gen_toks": 16}}},
         "resps": [["7 "]], "filtered_resps": ["7"]},
        {"doc_id": 1, "arguments": [["What is 2 plus 2?", {"do_sample": False}]], "resps": [["4"]]},
    )) + "\n", encoding="utf-8")
    run = read_transcript(str(samples))
    assert run.ok and len(run.calls) == 2
    assert run.sent(0)["input_text"] == [sent] and run.calls[0]["output"] == "7 "
    assert run.sent(0)["generate_kwargs"] == {"until": ["\n\n"], "max_gen_toks": 16}
    assert run.sent(1)["input_text"] == ["What is 2 plus 2?"] and run.calls[1]["output"] == "4"
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"arguments": {"gen_args_0": {"arg_0": 3}}, "resps": [["x"]]}) + "\n", encoding="utf-8")
    assert read_transcript(str(odd)).error["kind"] == "bad-transcript", "not a context: not read as one"


def test_a_batched_call_is_read_at_the_row_that_carries_the_prompt():
    """lm-eval and pipelines sort a batch their own way: the prompt asked is found by its text, not at row 0."""
    from ladder.fixtures.tokenizer import build_tokenizer
    from ladder.harness.compare import prompt_row, sent_ids

    tokenizer = build_tokenizer("chatml", 500, 9, 0)
    prompts = ["What is 3 plus 4?", "Add 2 and 5.", "What is 3 plus 4 plus 1?"]
    rows = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                          tokenize=True)["input_ids"] for p in prompts]
    width = max(len(r) for r in rows)
    order = [2, 0, 1]  # longest first, as lm-eval sorts
    record = {"input_ids": [[tokenizer.pad_token_id] * (width - len(rows[i])) + list(rows[i]) for i in order],
              "attention_mask": [[0] * (width - len(rows[i])) + [1] * len(rows[i]) for i in order]}
    for index, prompt in enumerate(prompts):
        assert prompt_row(record, tokenizer, prompt) == order.index(index)
        assert sent_ids(record, tokenizer, prompt=prompt) == list(rows[index])
    assert prompt_row(record, tokenizer, "not in any row") == 0
    assert prompt_row({"input_ids": [rows[0]]}, tokenizer, "Add 2 and 5.") == 0  # one row: that row


def test_http_requests_become_call_records_only_for_completion_endpoints():
    import json

    from ladder.harness.tap import http_generation_record

    body = json.dumps({"model": "m", "prompt": "What is 2 plus 3?", "max_tokens": 8}).encode()
    record = http_generation_record("POST", "http://user:pw@127.0.0.1:8000/v1/completions?x=1", body)
    assert record["http"] == {"url": "http://127.0.0.1:8000/v1/completions", "endpoint": "completions", "model": "m"}
    assert record["input_text"] == ["What is 2 plus 3?"] and record["tokenize_with_special_tokens"]
    assert record["generate_kwargs"] == {"max_tokens": 8}
    tokens = http_generation_record("POST", "http://h/v1/completions", json.dumps({"prompt": [1, 2, 3]}))
    assert tokens["input_ids"] == [[1, 2, 3]] and tokens["input_text"] is None
    several = http_generation_record("POST", "http://h/v1/completions", json.dumps({"prompt": ["a", "b"]}))
    assert several["input_text"] == ["a", "b"]
    chat = http_generation_record("POST", "http://h/v1/chat/completions/",
                                  json.dumps({"messages": [{"role": "user", "content": "hi"}], "stop": ["\n"]}))
    assert chat["http"]["endpoint"] == "chat/completions" and chat["messages"] == [{"role": "user", "content": "hi"}]
    assert chat["generate_kwargs"] == {"stop": ["\n"]}
    for method, url, payload in (("GET", "http://h/v1/completions", None), ("POST", "http://h/v1/models", body),
                                 ("POST", "http://h/v1/completions", b"not json"),
                                 ("POST", "http://h/v1/completions", b"[1, 2]")):
        assert http_generation_record(method, url, payload) is None


@pytest.mark.parametrize("path, body, endpoint, sent, settings", [
    # llama.cpp's llama-server: raw text (or ids) on /completion
    ("/completion", {"prompt": "What is 2 plus 3?", "n_predict": 8}, "completions", "What is 2 plus 3?",
     {"n_predict": 8}),
    # TGI: raw `inputs`, parameters nested
    ("/generate", {"inputs": "What is 2 plus 3?", "parameters": {"max_new_tokens": 8}}, "completions",
     "What is 2 plus 3?", {"max_new_tokens": 8}),
    # SGLang: raw `text`, sampling_params nested
    ("/generate", {"text": "What is 2 plus 3?", "sampling_params": {"temperature": 0}}, "completions",
     "What is 2 plus 3?", {"temperature": 0}),
    # Ollama: /api/generate is templated by the server unless raw; /api/chat takes messages
    ("/api/generate", {"model": "m", "prompt": "What is 2 plus 3?", "raw": True, "options": {"temperature": 0}},
     "completions", "What is 2 plus 3?", {"raw": True, "temperature": 0}),
    ("/api/generate", {"model": "m", "prompt": "What is 2 plus 3?", "system": "Be brief."}, "chat/completions",
     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 plus 3?"}], {}),
    ("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False},
     "chat/completions", [{"role": "user", "content": "hi"}], {"stream": False}),
])
def test_the_servers_native_generation_routes_are_recorded_as_what_they_send(path, body, endpoint, sent, settings):
    import json

    from ladder.harness.tap import http_generation_record

    record = http_generation_record("POST", f"http://127.0.0.1:8080{path}", json.dumps(body))
    assert record["http"]["endpoint"] == endpoint and record["http"]["url"] == f"http://127.0.0.1:8080{path}"
    assert (record["messages"] if endpoint == "chat/completions" else record["input_text"][0]) == sent
    assert record["generate_kwargs"] == settings


def test_posts_that_only_look_like_generation_routes_are_not_recorded():
    import json

    from ladder.harness.tap import http_generation_record

    for path, body in (("/generate", {"question": "What is 2 plus 3?"}),  # an app's own route: not a server's
                       ("/generate", {"text": "What is 2 plus 3?"}),
                       ("/api/generate", {"prompt": ["a"]}), ("/api/chat", {"prompt": "x"}),
                       ("/completion", {"text": "x"})):
        assert http_generation_record("POST", f"http://h{path}", json.dumps(body)) is None, path


def test_default_prompts_have_distinct_answers_and_their_references_match():
    """A model that gives one reply to everything (a collapsed path) can be right on at most one default prompt,
    and every reference answer the internals rungs score is one its prompt's regex accepts."""
    import re

    from ladder.harness import DEFAULT_ANSWERS, DEFAULT_PROMPTS

    assert len(DEFAULT_PROMPTS) >= 12 and set(DEFAULT_ANSWERS) == {prompt for prompt, _ in DEFAULT_PROMPTS}
    for prompt, pattern in DEFAULT_PROMPTS:
        assert re.search(pattern, DEFAULT_ANSWERS[prompt]), prompt
        others = [answer for other, answer in DEFAULT_ANSWERS.items() if other != prompt]
        assert not any(re.search(pattern, answer) for answer in others), (prompt, "accepts another's answer")
