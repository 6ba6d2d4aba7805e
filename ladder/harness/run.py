"""Running the user's harness under the tap, in each of its three forms.

- `file.py:function` / `module:function`: imported fresh (in ladder's process) and
  called once per prompt inside a `Tap`; the import itself runs under the tap too,
  since scripts load their model at import.
- a command with `{prompt}` (else it reads the prompt on stdin): run through the shell once per prompt, with the tap
  injected into its Python through a `sitecustomize` on PYTHONPATH; the child
  reports its records through a JSONL file.
- a transcript: what a harness sent and got, read from JSONL (docs/transcript.md).

The harness's own failures (import error, exception, timeout, non-zero exit, a
transcript that does not parse) are kept as `HarnessRun.error` with the
harness's traceback or stderr: they are never a verdict about the model.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import importlib.util
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ladder.harness.tap import Tap, prompt_records
from ladder.probes.base import step_progress

_fresh_names = itertools.count()
SITE_DIR = Path(__file__).parent / "site"


class HarnessTimeout(Exception):
    pass


@dataclass
class HarnessRun:
    """What one run of the harness did: per prompt, its output and the generate calls it made."""

    form: str  # function | command | transcript
    spec: str
    calls: list[dict[str, Any]] = field(default_factory=list)  # {prompt, output, seconds, generate: [...]}
    loads: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None  # {kind, message, prompt, traceback | stderr}
    redirect: dict[str, str] = field(default_factory=dict)
    batch: dict[str, Any] | None = None  # the harness's own batch entry point, when it has one
    output_tail: str = ""  # the end of what the harness printed

    @property
    def ok(self) -> bool:
        return self.error is None

    def generate_records(self) -> list[dict[str, Any]]:
        return [record for call in self.calls for record in call.get("generate", [])]

    def sent(self, index: int) -> dict[str, Any] | None:
        """The first generate call made for prompt `index` (what reached the model), if any."""
        records = self.calls[index].get("generate", []) if index < len(self.calls) else []
        return records[0] if records else None

    def model_loads(self) -> list[dict[str, Any]]:
        return [load for load in self.loads if load.get("kind") == "model"]

    def tokenizer_loads(self) -> list[dict[str, Any]]:
        return [load for load in self.loads if load.get("kind") == "tokenizer"]

    def to_dict(self) -> dict[str, Any]:
        return {"form": self.form, "spec": self.spec, "calls": self.calls, "loads": self.loads,
                "error": self.error, "redirect": self.redirect, "batch": self.batch}


def _harness_traceback(exc: BaseException) -> str:
    """The exception's traceback without ladder's and importlib's own frames."""
    tb = traceback.TracebackException.from_exception(exc)
    ladder_dir = str(Path(__file__).resolve().parent.parent)
    kept = [frame for frame in tb.stack
            if not frame.filename.startswith(ladder_dir) and "importlib" not in frame.filename
            and not frame.filename.startswith("<frozen")]
    tb.stack = traceback.StackSummary.from_list(kept)
    return "".join(tb.format())


def settled(value: Any) -> Any:
    """What a harness call finally gives: an `async def` harness's coroutine run to its result (on a fresh
    event loop in the calling thread), a streaming harness's generator of text pieces joined into the reply (or,
    when each piece extends the one before, the last: a stream of the reply so far). Anything else as it is."""
    import asyncio
    import inspect

    if inspect.isawaitable(value):
        async def result() -> Any:
            return await value

        return settled(asyncio.run(result()))
    if inspect.isgenerator(value) or inspect.isasyncgen(value):
        if inspect.isasyncgen(value):
            async def pieces() -> list[Any]:
                return [piece async for piece in value]

            parts = asyncio.run(pieces())
        else:
            parts = list(value)
        if not all(isinstance(part, str) for part in parts):
            return parts
        if len(parts) > 1 and all(len(after) > len(before) and after.startswith(before)
                                  for before, after in zip(parts, parts[1:])):
            return parts[-1]  # each piece is the reply so far (a chat UI's stream), not the next piece
        return "".join(parts)
    return value


def _call_with_timeout(function: Callable[[], Any], timeout: float) -> Any:
    """Run `function` in a worker thread, its result `settled`; raise HarnessTimeout after `timeout` seconds."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = settled(function())
        except BaseException as exc:  # the harness's own failure, kept as it is
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="ladder-harness", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise HarnessTimeout(f"no answer within {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def load_callable(spec: str) -> tuple[Any, Callable]:
    """A fresh import of `file.py:function` or `module:function` (`file.py:object.method` for a method of an
    object the module builds); returns (module, function)."""
    target, _, name = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        module_name = f"_ladder_harness_{next(_fresh_names)}_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.path.insert(0, str(path.parent))
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        finally:
            sys.modules.pop(module_name, None)
            if str(path.parent) in sys.path:
                sys.path.remove(str(path.parent))
    else:
        previous = sys.modules.pop(target, None)
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(target)
        finally:
            sys.path.remove(os.getcwd())
            if previous is not None:
                sys.modules[target] = previous
            else:
                sys.modules.pop(target, None)
    function: Any = module
    for part in name.split("."):  # `runner.generate`: a method of an object the module builds
        function = getattr(function, part, None)
    if not callable(function):
        raise AttributeError(f"{spec}: {name!r} is not a function of {target}")
    return module, function


def run_function(spec: str, prompts: list[str], *, timeout: float = 300.0,
                 redirect: dict[str, str] | None = None, batch: bool = False, singles: bool = True,
                 lenders: dict[str, Any] | None = None) -> HarnessRun:
    """Import the harness and call it once per prompt under the tap (unless `singles` is False) and its batch
    entry point `generate_batch` with all of them if asked (`run.batch`, None when it has none); `lenders` are
    ladder's loaded models the harness may be handed (see `Tap`)."""
    run = HarnessRun(form="function", spec=spec, redirect=dict(redirect or {}))
    captured = io.StringIO()  # the harness's prints and progress bars stay out of ladder's output
    with Tap(redirect=redirect, lenders=lenders) as tap, contextlib.redirect_stdout(captured), \
            contextlib.redirect_stderr(captured):
        tap.mark("import")
        try:
            module, function = _call_with_timeout(lambda: load_callable(spec), timeout)
        except HarnessTimeout as exc:
            run.error = {"kind": "timeout", "message": f"importing {spec}: {exc}", "prompt": None}
        except BaseException as exc:
            run.error = {"kind": "import", "message": f"importing {spec} failed: {type(exc).__name__}: {exc}",
                         "prompt": None, "traceback": _harness_traceback(exc)}
        if run.error is None:
            for index, prompt in enumerate(prompts if singles else []):
                step_progress("your harness: prompt", index + 1, len(prompts))
                tap.mark(index)
                started = time.perf_counter()
                call = {"prompt": prompt, "output": None}
                try:
                    output, called_with = _ask(function, prompt, tap, timeout)
                    if called_with:
                        call["called_with"] = CALLED_WITH[called_with]
                    text = reply_text(output)
                    call["output"] = text if text is not None else repr(output)
                    if not isinstance(output, str):
                        call["output_type"] = type(output).__name__
                except HarnessTimeout as exc:
                    run.error = {"kind": "timeout", "message": f"the harness on prompt {index}: {exc}",
                                 "prompt": prompt}
                except BaseException as exc:
                    run.error = {"kind": "exception",
                                 "message": f"the harness raised {type(exc).__name__}: {exc}",
                                 "prompt": prompt, "traceback": _harness_traceback(exc)}
                call["seconds"] = round(time.perf_counter() - started, 3)
                call["generate"] = prompt_records([r for r in tap.calls if r.get("label") == index])
                run.calls.append(call)
                if run.error is not None:
                    break
            batch_function = getattr(module, "generate_batch", None)
            if batch and run.error is None and callable(batch_function):
                tap.mark("batch")
                try:
                    outputs = _call_with_timeout(lambda: batch_function(list(prompts)), timeout)
                    run.batch = {"entry_point": "generate_batch", "outputs": [reply_text(o) if reply_text(o) is not None else str(o) for o in outputs],
                                 "generate": [r for r in tap.calls if r.get("label") == "batch"]}
                except BaseException as exc:
                    run.batch = {"entry_point": "generate_batch", "error": {
                        "kind": "exception", "message": f"generate_batch raised {type(exc).__name__}: {exc}",
                        "traceback": _harness_traceback(exc)}}
        run.loads = list(tap.loads)
    run.output_tail = _tail(captured.getvalue())
    if run.error is not None and run.output_tail:
        run.error["output"] = run.output_tail
    return run


def run_command(command: str, prompts: list[str], *, timeout: float = 300.0,
                redirect: dict[str, str] | None = None) -> HarnessRun:
    """Run the command once per prompt with the tap injected through sitecustomize: the quoted prompt in place of
    `{prompt}`, or on its stdin when the command has no `{prompt}` (`python chat.py < question.txt` scripts)."""
    run = HarnessRun(form="command", spec=command, redirect=dict(redirect or {}))
    ladder_root = str(Path(__file__).resolve().parent.parent.parent)
    with tempfile.TemporaryDirectory(prefix="ladder-tap-") as tmp:
        for index, prompt in enumerate(prompts):
            step_progress("your harness command: prompt", index + 1, len(prompts))
            records_file = Path(tmp) / f"records-{index}.jsonl"
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE_DIR), env.get("PYTHONPATH", "")) if p)
            env.update({"LADDER_TAP_OUT": str(records_file), "LADDER_TAP_ROOT": ladder_root,
                        "LADDER_TAP_LABEL": str(index), "LADDER_TAP_REDIRECT": json.dumps(run.redirect)})
            on_stdin = "{prompt}" not in command
            line = command.replace("{prompt}", shlex.quote(prompt))
            started = time.perf_counter()
            process = subprocess.Popen(line, shell=True, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       stdin=subprocess.PIPE if on_stdin else subprocess.DEVNULL,
                                       text=True, start_new_session=True)
            call: dict[str, Any] = {"prompt": prompt, "output": None, "command": line}
            if on_stdin:
                call["prompt_on"] = "stdin"
            try:
                stdout, stderr = process.communicate(prompt if on_stdin else None, timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                stdout, stderr = process.communicate()
                run.error = {"kind": "timeout", "message": f"the command did not finish within {timeout:g} s "
                                                           f"on prompt {index}", "prompt": prompt,
                             "stderr": _tail(stderr)}
            call["seconds"] = round(time.perf_counter() - started, 3)
            records = _read_records(records_file)
            call["generate"] = prompt_records([r for kind, r in records if kind == "call"])
            run.loads.extend(r for kind, r in records if kind == "load")
            if run.error is None and process.returncode != 0:
                run.error = {"kind": "exit", "message": f"the command exited with status {process.returncode} "
                                                        f"on prompt {index}", "prompt": prompt,
                             "stderr": _tail(stderr)}
            else:
                call["output"] = stdout.rstrip("\n")
            tap_problem = next((r for kind, r in records if kind == "tap-error"), None)
            if tap_problem:
                call["tap_error"] = tap_problem.get("message")
            run.calls.append(call)
            if run.error is not None:
                break
    return run


def _tail(text: str | None, limit: int = 4000) -> str:
    text = text or ""
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _read_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        records.append((item.get("type", "call"), item.get("record", {})))
    return records


TRANSCRIPT_KEYS = {"prompt", "input", "input_ids", "output", "output_ids", "generate_kwargs", "attention_mask"}


def read_transcript(path: str) -> HarnessRun:
    """Calls from a transcript JSONL file (schema in docs/transcript.md); problems become `error`."""
    run = HarnessRun(form="transcript", spec=path)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        run.error = {"kind": "bad-transcript", "message": f"cannot read transcript {path}: {exc}", "prompt": None}
        return run
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        problem = None
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            item, problem = None, f"not JSON ({exc.msg})"
        if problem is None and not isinstance(item, dict):
            problem = "not a JSON object"
        elif problem is None:
            item = lm_eval_sample(item)
            if "input" not in item and "input_ids" not in item and "messages" in item:
                problem = ("holds chat `messages`, not the text the model was given (a server rendered them): "
                           "record that text as `input` (or its ids as `input_ids`), or check the server itself "
                           "with --endpoint URL")
            elif "input" not in item and "input_ids" not in item:
                problem = "has neither `input` (text) nor `input_ids`"
            elif "input" in item and not isinstance(item["input"], str):
                problem = "`input` must be a string"
            elif "input_ids" in item and not _int_list(item["input_ids"]):
                problem = "`input_ids` must be a list of integers"
            elif "output_ids" in item and not _int_list(item["output_ids"]):
                problem = "`output_ids` must be a list of integers"
            elif "output" in item and not isinstance(item["output"], (str, type(None))):
                problem = "`output` must be a string"
        if problem:
            run.error = {"kind": "bad-transcript", "message": f"{path}:{number}: {problem}", "prompt": None}
            return run
        record: dict[str, Any] = {
            "label": len(run.calls),
            "input_ids": [item["input_ids"]] if "input_ids" in item else None,
            "input_text": [item["input"]] if "input" in item else None,
            "attention_mask": [item["attention_mask"]] if _int_list(item.get("attention_mask")) else None,
            "output_ids": [item["output_ids"]] if "output_ids" in item else None,
            "output_text": [item["output"]] if isinstance(item.get("output"), str) else None,
            "generate_kwargs": item.get("generate_kwargs") or {},
            "unknown_keys": sorted(set(item) - TRANSCRIPT_KEYS),
        }
        run.calls.append({"prompt": item.get("prompt"), "output": item.get("output"), "generate": [record],
                          "line": number})
    if not run.calls:
        run.error = {"kind": "bad-transcript", "message": f"{path}: no records", "prompt": None}
    return run


def lm_eval_sample(item: dict[str, Any]) -> dict[str, Any]:
    """A line of lm-evaluation-harness's `--log_samples` file read as a transcript record: the context
    `generate_until` sent (`arguments`, after `--apply_chat_template` when given) as `input`, the unfiltered
    response (`resps`) as `output`, the request's generation arguments as `generate_kwargs`. Other lines as
    they are."""
    if "input" in item or "input_ids" in item or "arguments" not in item or "resps" not in item:
        return item
    arguments = item["arguments"]
    if isinstance(arguments, dict):  # {"gen_args_0": {"arg_0": context, "arg_1": {...}}}
        arguments = [list(args.values()) if isinstance(args, dict) else args for args in arguments.values()]
    request = arguments[0] if isinstance(arguments, list) and arguments else None
    if not isinstance(request, (list, tuple)) or not request or not isinstance(request[0], str):
        return item
    response = item["resps"]
    while isinstance(response, list) and response:
        response = response[0]
    record = {key: value for key, value in item.items() if key not in ("arguments", "resps")}
    record["input"] = request[0]
    if isinstance(response, str):
        record["output"] = response
    if len(request) > 1 and isinstance(request[1], dict):
        record["generate_kwargs"] = request[1]
    return record


LIST_PARAMETERS = {"prompts", "texts", "inputs", "questions", "queries", "batch", "requests", "contexts"}
MESSAGE_PARAMETERS = {"messages", "conversation", "history", "chat_history", "dialog", "dialogue", "msgs"}


def _first_parameter(function: Any) -> tuple[str, str] | None:
    """The name and annotation (as text, lower case) of a function's first parameter."""
    import inspect

    try:
        first = next(iter(inspect.signature(function).parameters.values()))
    except (TypeError, ValueError, StopIteration):
        return None
    annotation = first.annotation if isinstance(first.annotation, str) else repr(first.annotation)
    return first.name, annotation.lower()


def takes_a_list(function: Any) -> bool:
    """Whether a harness function says it takes a list of prompts: its first parameter annotated as a list
    (or sequence) or named like one (`prompts`, `texts`, ...). Others are called with a string first."""
    first = _first_parameter(function)
    return first is not None and (first[0] in LIST_PARAMETERS
                                  or any(word in first[1] for word in ("list", "sequence", "iterable")))


def takes_messages(function: Any) -> bool:
    """Whether a harness function says it takes chat messages (`chat(messages: list[dict]) -> str`): its first
    parameter named like a conversation (`messages`, `history`, ...) or annotated with dicts or messages."""
    first = _first_parameter(function)
    if first is None:
        return False
    name, annotation = first
    if any(word in annotation for word in ("dict", "message", "mapping")):
        return True
    text_only = "str" in annotation  # `history: str` is text, whatever its name
    return name in MESSAGE_PARAMETERS and not text_only


CALLED_WITH = {"list": "a list of one prompt", "messages": "the prompt as one user message (a chat)",
               "history": "the prompt and an empty history (a chat UI's fn(message, history))"}


HISTORY_PARAMETERS = {"history", "chat_history"}


def takes_a_history(function: Any) -> bool:
    """Whether a harness function is a chat UI's `fn(message, history)` (Gradio's ChatInterface): a required
    second parameter named `history` or `chat_history`."""
    import inspect

    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False
    return len(parameters) >= 2 and parameters[1].name in HISTORY_PARAMETERS \
        and parameters[1].default is inspect.Parameter.empty \
        and parameters[1].kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _ask(function: Any, prompt: str, tap: Any, timeout: float) -> tuple[Any, str | None]:
    """A harness function's reply to one prompt, and how it was called: None (with the prompt's text), "list"
    (`generate(prompts) -> list`: a list of one prompt) or "messages" (`chat(messages) -> str`: the prompt as
    one user message). The form the function declares (`takes_messages`, `takes_a_list`, else text) is tried
    first; the others are guesses, tried when it raises or when a text call returned a list that is not a
    reply (it ran on the prompt's characters). A list call counts only when it returns a list of one reply, a
    messages call when it returns a reply; when every form fails, the declared form's error stands. Only the
    counted call's generate records stay on the tap. A chat UI's `fn(message, history)` is called with the
    prompt and an empty history ("history")."""
    if takes_a_history(function):
        return _call_with_timeout(lambda: function(prompt, []), timeout), "history"
    recorded = len(tap.calls)
    forms: dict[str | None, Any] = {None: prompt, "list": [prompt], "messages": [{"role": "user", "content": prompt}]}
    order = (["messages", None, "list"] if takes_messages(function)
             else ["list", None, "messages"] if takes_a_list(function) else [None, "list", "messages"])
    by_string = None
    declared_error: BaseException | None = None
    for form in order:
        argument = forms[form]
        try:
            output = _call_with_timeout(lambda: function(argument), timeout)
        except HarnessTimeout:
            raise
        except BaseException as exc:
            del tap.calls[recorded:]
            declared_error = declared_error or exc
            continue
        records = tap.calls[recorded:]
        del tap.calls[recorded:]
        if form is None:
            by_string = (output, records)
            if not isinstance(output, (list, tuple)) or reply_text(output) is not None:
                break
        elif form == "list" and isinstance(output, (list, tuple)) and len(output) == 1 \
                and reply_text(output[0]) is not None:
            tap.calls.extend(records)
            return reply_text(output[0]), form
        elif form == "messages" and reply_text(output) is not None:
            tap.calls.extend(records)
            return output, form
    if by_string is None:
        raise declared_error if declared_error is not None else TypeError("the harness returned no reply")
    output, records = by_string
    tap.calls.extend(records)
    return output, None


REPLY_KEYS = ("generated_text", "text", "content", "response", "output", "completion", "answer", "reply")


def reply_text(value: Any) -> str | None:
    """The reply text in what a harness returned: a string; a transformers pipeline's `[{"generated_text": ...}]`
    (text, or the chat messages ending with the assistant's); a dict with a reply key (`text`, `content`,
    `response`, ...); an OpenAI client's completion object (`choices[0].message.content` or `.text`). None when
    there is none to be found."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return reply_text(value[0])
        if value and all(isinstance(m, dict) and "role" in m for m in value):  # a chat: the last message
            return reply_text(value[-1].get("content"))
        return None
    if isinstance(value, dict):
        for key in REPLY_KEYS:
            if key in value:
                return reply_text(value[key])
        if "choices" in value:
            return reply_text(value["choices"])
        if "message" in value:
            return reply_text(value["message"])
        return None
    choices = getattr(value, "choices", None)
    if isinstance(choices, (list, tuple)) and choices:
        choice = choices[0]
        message = getattr(choice, "message", None)
        return reply_text(getattr(message, "content", None) if message is not None else getattr(choice, "text", None))
    return None


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
