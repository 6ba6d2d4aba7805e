"""The `openai` backend: a model reached through an OpenAI-compatible server (vLLM, llama.cpp's server,
SGLang, TGI, Ollama's `/v1`, `transformers serve`).

Standard library only (`urllib`): no client package is needed. `ServedModel.discover()` asks the server
what it really does instead of trusting its documentation: the models it lists, whether `logprobs`
come back when requested (`transformers serve` ignores them), and whether it shows how it renders a
conversation (`render_template`): `/tokenize` with `messages` (vLLM, SGLang), `/chat_tokenize` (TGI) or
`/apply-template` (llama.cpp's `llama-server`), tried in that order at the server's root. Every request
is greedy (`temperature` 0) and counted (`requests`), and its wall time summed (`seconds`). The API key
is read from the environment variable the case names and sent as a bearer token; it is never stored in
a record or a report.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ladder.backends.contract import Backend, require

if TYPE_CHECKING:
    from ladder.probes.base import ProbeContext

REQUEST_TIMEOUT_S = 120.0


class ServerError(Exception):
    """The server could not be reached or answered with an error (the message says which, in words)."""


@dataclass
class Reply:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    logprobs_returned: bool


@dataclass
class Rendering:
    """How the server renders a conversation: its token ids, its text, or both, and the endpoint that said."""

    via: str
    ids: list[int] | None = None
    text: str | None = None


# Endpoints (at the server's root, not under /v1) that show the server's rendering of a conversation:
# (path, request body, how to read the reply). The first that answers is the one used.
RENDER_ENDPOINTS: tuple[tuple[str, Any, Any], ...] = (
    ("/tokenize",  # vLLM, SGLang
     lambda model, messages: {"model": model, "messages": messages, "add_generation_prompt": True},
     lambda data: Rendering("/tokenize", ids=[int(t) for t in data["tokens"]])),
    ("/chat_tokenize",  # TGI
     lambda model, messages: {"model": model, "messages": messages},
     lambda data: Rendering("/chat_tokenize", ids=[int(t["id"]) for t in data["tokenize_response"]],
                            text=data.get("templated_text"))),
    ("/apply-template",  # llama.cpp's llama-server
     lambda model, messages: {"messages": messages},
     lambda data: Rendering("/apply-template", text=str(data["prompt"]))),
)


@dataclass
class ServedModel(Backend):
    """One model on one OpenAI-compatible server: the `chat` and `completions` capabilities of the `Backend`
    contract, `logprobs` and `render_template` where `discover()` finds them."""

    url: str  # the API root, e.g. http://127.0.0.1:8000/v1
    model: str | None = None
    api_key_env: str | None = None
    # `logprobs` and `render_template` when discover() sees them
    capabilities: frozenset[str] = frozenset({"chat", "completions"})
    requests: int = 0
    seconds: float = 0.0
    listed: list[str] = field(default_factory=list)
    render_path: str | None = None  # the endpoint that shows the server's rendering (discover())
    name: ClassVar[str] = "openai"
    how_to_reach: ClassVar[str] = "give --endpoint URL"

    @staticmethod
    def reaches(case: Any) -> bool:
        """A case reaches a served model when it names the server's endpoint."""
        return bool(getattr(case, "endpoint", None))

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def root(self) -> str:
        """The server's root: the API URL without its trailing `/v1`."""
        url = self.url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
              at_root: bool = False) -> dict[str, Any]:
        base = self.root() if at_root else self.url.rstrip("/")
        request = urllib.request.Request(base + path, method=method, headers=self._headers(),
                                         data=None if body is None else json.dumps(body).encode())
        from ladder.probes.base import count_cost

        started = time.perf_counter()
        self.requests += 1
        count_cost("http_requests")
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise ServerError(f"{method} {self.url}{path}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ServerError(f"{method} {self.url}{path}: {getattr(exc, 'reason', exc)}") from None
        finally:
            self.seconds += time.perf_counter() - started
        try:
            return json.loads(payload)
        except ValueError:
            raise ServerError(f"{method} {self.url}{path}: not JSON: {payload[:200]!r}") from None

    def discover(self) -> "ServedModel":
        """The served model's name (the only one listed, when none was given) and whether logprobs work."""
        listed = self._call("GET", "/models").get("data") or []
        self.listed = [str(item.get("id")) for item in listed if isinstance(item, dict)]
        if self.model is None:
            if len(self.listed) != 1:
                raise ServerError(f"{self.url} lists {len(self.listed)} models ({', '.join(self.listed[:5])}): "
                                  "name one with --served-model")
            self.model = self.listed[0]
        probe = self._completion("Hello", max_tokens=1, logprobs=True)
        capabilities = {"chat", "completions"} | ({"logprobs"} if probe.logprobs_returned else set())
        for path, body, read in RENDER_ENDPOINTS:
            try:
                found = read(self._call("POST", path, body(self.model, [{"role": "user", "content": "Hello"}]),
                                        at_root=True))
            except (ServerError, KeyError, TypeError, ValueError):
                continue  # not this server's endpoint (404), or another shape
            if not (found.ids or found.text):
                continue  # it ignored the messages (llama-server's /tokenize takes `content`: no tokens)
            self.render_path = path
            capabilities.add("render_template")
            break
        self.capabilities = frozenset(capabilities)
        return self

    def rendering(self, messages: list[dict[str, str]]) -> Rendering:
        """The server's own rendering of `messages` with the generation prompt."""
        require(self, "render_template")
        body, read = {path: (body, read) for path, body, read in RENDER_ENDPOINTS}[self.render_path]
        try:
            return read(self._call("POST", self.render_path, body(self.model, messages), at_root=True))
        except (KeyError, TypeError, ValueError) as exc:
            raise ServerError(f"POST {self.root()}{self.render_path}: an unexpected reply ({exc})") from None

    def _choice(self, data: dict[str, Any]) -> dict[str, Any]:
        choices = data.get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            raise ServerError(f"{self.url}: a reply without choices: {json.dumps(data)[:200]}")
        return choices[0]

    def chat(self, messages: list[dict[str, str]], max_tokens: int, greedy: bool = True) -> Reply:
        """A chat completion; `greedy=False` leaves `temperature` unset, as a client that does not set it."""
        require(self, "chat")
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_tokens}
        if greedy:
            body["temperature"] = 0
        data = self._call("POST", "/chat/completions", body)
        choice = self._choice(data)
        return Reply(text=(choice.get("message") or {}).get("content") or "", finish_reason=choice.get("finish_reason"),
                     prompt_tokens=(data.get("usage") or {}).get("prompt_tokens"),
                     logprobs_returned=bool(choice.get("logprobs")))

    def complete(self, prompt: str, max_tokens: int, logprobs: bool = False) -> Reply:
        """A raw text completion (`logprobs`: ask for the chosen tokens' log-probabilities)."""
        require(self, "completions")
        return self._completion(prompt, max_tokens, logprobs)

    def _completion(self, prompt: str, max_tokens: int, logprobs: bool) -> Reply:
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
        if logprobs:
            body["logprobs"] = 1
        data = self._call("POST", "/completions", body)
        choice = self._choice(data)
        return Reply(text=choice.get("text") or "", finish_reason=choice.get("finish_reason"),
                     prompt_tokens=(data.get("usage") or {}).get("prompt_tokens"),
                     logprobs_returned=bool(choice.get("logprobs")))

    def close(self) -> None:
        pass


def served_model(ctx: "ProbeContext") -> ServedModel:
    """The run's served model (`--endpoint`), discovered on first use."""
    case = ctx.case
    return ctx.resources.get("openai:endpoint", lambda: ServedModel(
        url=case.endpoint, model=case.served_model, api_key_env=case.api_key_env).discover())
