"""The tap: records what reached the model while the user's own harness runs.

`Tap` is a context manager that patches, for its duration only,
`transformers.GenerationMixin.generate` (every call: input ids, attention mask,
the kwargs as `generate` received them, the effective generation config after
merging with the model's `generation_config.json`, output ids, dtype,
`model.training`) and the `from_pretrained` classmethods of models and
tokenizers (which checkpoint and tokenizer were loaded). Everything patched is
restored in `finally`, also when the harness raises. The harness's code is not
changed.

`redirect` maps a model path to another: the harness asks for the fine-tune and
gets the base (harness-control runs the base through the exact same harness
path this way). Tokenizers are never redirected: they are part of the path.

`lenders` maps a model path to ladder's own loaded instance of it: a harness that
loads that checkpoint the same way (same class, dtype, device, config) is handed
ladder's instance instead of a second copy of the weights; the load record says
`lent_by_ladder`. Any other load goes through untouched. A greedy `generate` call on a
lent instance is watched (a logits processor that reads each step's scores and changes
none): its replies, their log-probabilities and entropies are remembered by the lender
as its own greedy replies (`HFModel.watch_greedy`), so ladder's rungs that need the
same prompts' greedy replies continue them instead of generating them again.

A harness that decodes by hand (its own loop of `model(input_ids=...)` calls, with or without a KV cache)
is recorded when its calls form a decoding loop: the first forward pass of the prompt, then one token more
per pass. The record (`via: "forward"`) carries what was sent; its stopping and sampling are the harness's
own code, so it has no generation config. A prompt's `generate` records, when it has any, take precedence.

A harness that calls a server is recorded too: every POST to an OpenAI-compatible
`/completions` or `/chat/completions` endpoint, or to a server's own generation route
(llama.cpp's `/completion`, TGI's and SGLang's `/generate`, Ollama's `/api/generate` and
`/api/chat`), made through `http.client` (`urllib`), `urllib3` (`requests`), `httpx` or
`httpx2` (the `openai` client) becomes a call record with the endpoint, the prompt or
messages as sent and the parameters. Headers are never read, so API keys are never recorded.

Records are plain JSON-serialisable dicts; docs/transcript.md describes them.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import os
import threading
from typing import Any
from urllib.parse import urlsplit

# from_pretrained of one class may call another's inside; only the outermost load is recorded.
# AutoModel* classes end in PreTrainedModel.from_pretrained, which is where models are caught.
_depth = threading.local()
# inside urllib3's urlopen, which records the request itself: http.client below it does not record again
_http_depth = threading.local()
# inside a model's forward pass or generate: the passes made there are not the harness's own
_forward_depth = threading.local()
_MISSING = object()


def _path_str(value: Any) -> str:
    return os.fspath(value) if isinstance(value, (str, os.PathLike)) else repr(value)


def _same_path(a: str, b: str) -> bool:
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except (TypeError, ValueError):
        return a == b


def jsonable(value: Any, *, max_items: int = 64) -> Any:
    """A JSON-serialisable rendering of a generate() argument (tensors summarised, objects named)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [jsonable(v, max_items=max_items) for v in list(value)[:max_items]]
        return items + ([f"... {len(value) - max_items} more"] if len(value) > max_items else [])
    if isinstance(value, dict):
        return {str(k): jsonable(v, max_items=max_items) for k, v in value.items()}
    if hasattr(value, "to_diff_dict") and hasattr(value, "validate"):  # a GenerationConfig
        return {"GenerationConfig": jsonable(value.to_diff_dict())}
    if hasattr(value, "shape") and hasattr(value, "tolist"):
        if getattr(value, "numel", lambda: max_items + 1)() <= max_items:
            return value.tolist()
        return {"tensor": list(value.shape), "dtype": str(getattr(value, "dtype", ""))}
    if hasattr(value, "dtype") and "torch" in type(value).__module__:
        return str(value)
    name = getattr(value, "__qualname__", None) or type(value).__qualname__
    return f"<{name}>"


class Tap:
    """Patch transformers while the harness runs; record loads and generate calls.

    Use as `with Tap(redirect={ft: base}) as tap: harness(prompt)`; then `tap.calls`
    (one dict per generate call) and `tap.loads` (one dict per from_pretrained).
    `tap.mark(label)` tags the calls that follow (the prompt being run).
    """

    def __init__(self, redirect: dict[str, str] | None = None, on_record=None,
                 lenders: dict[str, Any] | None = None):
        self.redirect = {os.fspath(k): os.fspath(v) for k, v in (redirect or {}).items()}
        # model path -> ladder's loaded model (an HFModel): a harness loading that checkpoint the same way is
        # handed ladder's instance instead of a second copy of the weights (`HFModel.lends_to`)
        self.lenders = {os.path.realpath(os.fspath(k)): v for k, v in (lenders or {}).items()}
        self.lent: list[Any] = []  # the lenders whose model the harness was handed
        self.on_record = on_record  # called with ("call" | "load", record) as each is made
        self.calls: list[dict[str, Any]] = []
        self.loads: list[dict[str, Any]] = []
        self.tokenizers: list[Any] = []  # tokenizers the harness loaded, in order (for decoding)
        self.label: Any = None
        self._decoding: dict[Any, dict[str, Any]] = {}  # label -> the hand-decoding loop seen under it
        self._hand_decoded: list[Any] = []  # models the harness was seen decoding by hand
        self._saved: list[tuple[type, str, Any]] = []
        self._lock = threading.Lock()

    # ---- install / restore ---------------------------------------------------------------

    def __enter__(self) -> "Tap":
        import transformers
        from transformers import AutoTokenizer, GenerationMixin, PreTrainedModel, PreTrainedTokenizerBase

        try:
            self._patch(GenerationMixin, "generate", self._wrap_generate(GenerationMixin.__dict__["generate"]))
            self._patch(PreTrainedModel, "__call__", self._wrap_forward(PreTrainedModel.__call__))
            self._patch_loader(PreTrainedModel, "model")
            self._patch_loader(PreTrainedTokenizerBase, "tokenizer")
            self._patch_loader(AutoTokenizer, "tokenizer")
            self._patch_http()
        except BaseException:
            self.restore()
            raise
        self._transformers_version = transformers.__version__
        return self

    def __exit__(self, *exc_info) -> None:
        self.restore()

    def _patch(self, owner: type, name: str, replacement: Any) -> None:
        self._saved.append((owner, name, owner.__dict__.get(name, _MISSING)))
        setattr(owner, name, replacement)

    def restore(self) -> None:
        """Put back everything patched, in reverse order (idempotent); an inherited attribute is inherited again."""
        while self._saved:
            owner, name, original = self._saved.pop()
            if original is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, original)

    def mark(self, label: Any) -> None:
        self.label = label

    def _record(self, kind: str, record: dict[str, Any]) -> None:
        with self._lock:
            (self.calls if kind == "call" else self.loads).append(record)
        if self.on_record is not None:
            self.on_record(kind, record)

    # ---- from_pretrained ---------------------------------------------------------------------

    def _patch_loader(self, owner: type, kind: str) -> None:
        original = owner.__dict__["from_pretrained"]  # a classmethod object
        function = original.__func__
        tap = self

        def from_pretrained(cls, pretrained_model_name_or_path=None, *args, **kwargs):
            requested = _path_str(pretrained_model_name_or_path)
            path = pretrained_model_name_or_path
            redirected = None
            if kind == "model":
                for source, target in tap.redirect.items():
                    if isinstance(path, (str, os.PathLike)) and _same_path(os.fspath(path), source):
                        path, redirected = target, target
                        # a config loaded from the original path would come along: load it from the target
                        if "config" in kwargs and not isinstance(kwargs["config"], (str, os.PathLike)):
                            kwargs.pop("config")
            depth = getattr(_depth, kind, 0)
            lender = tap._lender(kind, depth, cls, path, args, kwargs)
            if lender is not None:
                tap.lent.append(lender)
                record = tap._load_record(kind, cls, requested, redirected, kwargs, lender.loaded_model)
                tap._record("load", {**record, "lent_by_ladder": True})
                return lender.loaded_model
            setattr(_depth, kind, depth + 1)
            try:
                result = function(cls, path, *args, **kwargs)
            finally:
                setattr(_depth, kind, depth)
            if depth == 0:
                tap._record("load", tap._load_record(kind, cls, requested, redirected, kwargs, result))
            return result

        self._patch(owner, "from_pretrained", classmethod(from_pretrained))

    def _lender(self, kind, depth, cls, path, args, kwargs):
        """The lender whose instance this outermost model load gets, if one lends to it."""
        if kind != "model" or depth or not self.lenders or not isinstance(path, (str, os.PathLike)):
            return None
        lender = self.lenders.get(os.path.realpath(os.fspath(path)))
        if lender is None or any(lent is lender for lent in self.lent):
            return None
        try:
            return lender if lender.lends_to(cls, args, kwargs) else None
        except Exception:  # lending is an optimisation: when in doubt the harness loads its own copy
            return None

    def _load_record(self, kind, cls, requested, redirected, kwargs, result) -> dict[str, Any]:
        loaded = result[0] if isinstance(result, tuple) else result
        record: dict[str, Any] = {
            "kind": kind, "called_on": cls.__name__, "path": requested, "redirected_to": redirected,
            "kwargs": jsonable({k: v for k, v in kwargs.items() if k != "config"}),
            "class": type(loaded).__name__, "label": self.label,
        }
        if kind == "tokenizer":
            self.tokenizers.append(loaded)
            record["tokenizer"] = tokenizer_state(loaded)
        else:
            record["dtype"] = str(getattr(loaded, "dtype", ""))
            record["name_or_path"] = getattr(loaded, "name_or_path", None)
        return record

    # ---- generate ---------------------------------------------------------------------------

    def _wrap_generate(self, original):
        signature = inspect.signature(original)
        tap = self

        def generate(model, *args, **kwargs):
            watch = tap._watch(model, signature, args, kwargs)
            _forward_depth.value = getattr(_forward_depth, "value", 0) + 1
            try:
                result = original(model, *args, **(watch.added_to(kwargs) if watch is not None else kwargs))
            finally:
                _forward_depth.value -= 1
            try:
                record = tap._call_record(model, signature, args, kwargs, result)
            except Exception as exc:  # recording must never change what the harness gets
                record = {"label": tap.label, "record_error": f"{type(exc).__name__}: {exc}"}
            if watch is not None:
                with contextlib.suppress(Exception):  # an optimisation: the call's record stands without it
                    watch.remember(record)
            tap._record("call", record)
            return result

        generate.__wrapped__ = original
        generate.__doc__ = original.__doc__
        return generate

    def _watch(self, model, signature, args, kwargs):
        """The lender's watch over this generate call when `model` is a lent instance and the call decodes
        greedily (None otherwise, or when in doubt: watching is an optimisation)."""
        lender = next((lent for lent in self.lent if getattr(lent, "loaded_model", None) is model), None)
        if lender is None or not hasattr(lender, "watch_greedy"):
            return None
        try:
            named = _named_arguments(signature, model, args, kwargs)
            return lender.watch_greedy(named, effective_generation_config(model, named))
        except Exception:
            return None

    def _call_record(self, model, signature, args, kwargs, result) -> dict[str, Any]:
        named = _named_arguments(signature, model, args, kwargs)
        input_ids = named.pop("inputs", None)
        if input_ids is None:
            input_ids = named.pop("input_ids", None)
        else:
            named.pop("input_ids", None)
        mask = named.pop("attention_mask", None)
        rows, mask_rows = _id_rows(input_ids), _id_rows(mask)
        sequences = getattr(result, "sequences", result)
        out_rows = sequences.tolist() if hasattr(sequences, "tolist") else None
        encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        width = len(rows[0]) if rows else 0
        new_rows = None
        if out_rows is not None:
            new_rows = out_rows if encoder_decoder else [row[width:] for row in out_rows]
        record: dict[str, Any] = {
            "label": self.label,
            "input_ids": rows,
            "attention_mask": mask_rows,
            "inputs_embeds_given": "inputs_embeds" in named,
            "generate_kwargs": jsonable({k: v for k, v in named.items() if k != "inputs_embeds"}),
            "model_generation_config": jsonable(model.generation_config.to_dict())
            if getattr(model, "generation_config", None) is not None else None,
            "effective_generation_config": effective_generation_config(model, named),
            "output_ids": new_rows,
        }
        return self._with_model_and_text(record, model)

    def _with_model_and_text(self, record: dict[str, Any], model) -> dict[str, Any]:
        """`record` with the model's state and, through the harness's last tokenizer, its ids as text."""
        record.update({
            "model_class": type(model).__name__,
            "model_path": getattr(model, "name_or_path", None),
            "dtype": str(model.dtype),
            "training": bool(model.training),
            "adapters_loaded": _adapters_loaded(model),
            "device": str(getattr(model, "device", "")),
        })
        tokenizer = self.tokenizers[-1] if self.tokenizers else None
        rows, mask_rows, new_rows = record.get("input_ids"), record.get("attention_mask"), record.get("output_ids")
        if tokenizer is not None:
            record["tokenizer"] = tokenizer_state(tokenizer)
            if rows is not None:
                record["input_text"] = [tokenizer.decode(_unpadded(r, m), skip_special_tokens=False)
                                        for r, m in zip(rows, mask_rows or [None] * len(rows))]
            if new_rows is not None:
                record["output_text"] = [tokenizer.decode(r, skip_special_tokens=False) for r in new_rows]
        return record

    # ---- a decoding loop written by hand -------------------------------------------------------

    def _wrap_forward(self, original):
        tap = self

        def __call__(model, *args, **kwargs):
            if getattr(_forward_depth, "value", 0):
                return original(model, *args, **kwargs)
            _forward_depth.value = 1
            try:
                result = original(model, *args, **kwargs)
            finally:
                _forward_depth.value = 0
            try:
                tap._forward_pass(model, args, kwargs)
            except Exception:  # recording must never change what the harness gets
                pass
            return result

        return __call__

    def _forward_pass(self, model, args, kwargs) -> None:
        """Follow the harness's own forward passes under the current label: the first is the prompt; a pass
        that adds one token per row (the whole sequence again, or one token on a KV cache) makes it a decoding
        loop, recorded once, as the prompt sent. Once a model is seen decoding by hand, the first pass under
        a later label is its prompt already (a reply that stops at once takes one pass)."""
        if not callable(getattr(model, "can_generate", None)) or not model.can_generate():
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None or not hasattr(ids, "tolist") or getattr(ids, "ndim", 0) not in (1, 2):
            return
        rows = _id_rows(ids)
        state = self._decoding.get(self.label)
        if state is None or state["model"] is not model:
            state = {"model": model, "prompt": rows, "mask": _id_rows(kwargs.get("attention_mask")),
                     "sequence": rows, "recorded": False}
            self._decoding[self.label] = state
            if any(known is model for known in self._hand_decoded):
                self._record_hand_decoding(state)
            return
        sequence = state["sequence"]
        cached = kwargs.get("cache", kwargs.get("past_key_values"))  # transformers >= 5.25 names it `cache`
        on_cache = cached is not None and all(len(r) == 1 for r in rows)
        again = all(len(r) == len(s) + 1 and r[:-1] == s for r, s in zip(rows, sequence))
        if len(rows) != len(sequence) or not (on_cache or again):
            return
        state["sequence"] = [s + r[-1:] for s, r in zip(sequence, rows)]
        if not any(known is model for known in self._hand_decoded):
            self._hand_decoded.append(model)
        if not state["recorded"]:
            self._record_hand_decoding(state)

    def _record_hand_decoding(self, state: dict[str, Any]) -> None:
        state["recorded"] = True
        record = {"label": self.label, "via": "forward", "input_ids": state["prompt"], "attention_mask": state["mask"],
                  "generate_kwargs": {}, "output_ids": None}
        self._record("call", self._with_model_and_text(record, state["model"]))


    # ---- HTTP: a harness that calls a server ------------------------------------------------------------

    def _patch_http(self) -> None:
        import http.client
        import importlib.util

        tap = self
        request = http.client.HTTPConnection.__dict__["request"]

        def patched_request(connection, method, url, body=None, headers=None, **kwargs):
            if not getattr(_http_depth, "inside", False):  # urllib3 (below) records its own requests
                scheme = "https" if isinstance(connection, http.client.HTTPSConnection) else "http"
                tap._http_call(method, f"{scheme}://{connection.host}:{connection.port}{url}"
                               if url.startswith("/") else url, body)
            return request(connection, method, url, body, headers if headers is not None else {}, **kwargs)

        self._patch(http.client.HTTPConnection, "request", patched_request)
        if importlib.util.find_spec("urllib3") is not None:  # requests: urllib3 2 writes requests itself
            import urllib3.connectionpool

            pool_class = urllib3.connectionpool.HTTPConnectionPool
            urlopen = pool_class.__dict__["urlopen"]

            def patched_urlopen(pool, method, url, body=None, *args, **kwargs):
                if not getattr(_http_depth, "inside", False):
                    target = url if "://" in url else f"{pool.scheme}://{pool.host}:{pool.port}{url}"
                    tap._http_call(method, target, body)
                outer = getattr(_http_depth, "inside", False)
                _http_depth.inside = True
                try:
                    return urlopen(pool, method, url, body, *args, **kwargs)
                finally:
                    _http_depth.inside = outer

            self._patch(pool_class, "urlopen", patched_urlopen)
        for name in HTTPX_MODULES:  # the `openai` client sends through one of them
            if importlib.util.find_spec(name) is not None:
                self._patch_httpx(importlib.import_module(name))

    def _patch_httpx(self, httpx) -> None:
        """Record what an httpx-style module's clients send (`Client.send`, `AsyncClient.send`)."""
        tap = self
        send, send_async = httpx.Client.__dict__["send"], httpx.AsyncClient.__dict__["send"]

        def patched_send(client, request, *args, **kwargs):
            tap._http_call(request.method, str(request.url), _request_body(request))
            return send(client, request, *args, **kwargs)

        async def patched_send_async(client, request, *args, **kwargs):
            tap._http_call(request.method, str(request.url), _request_body(request))
            return await send_async(client, request, *args, **kwargs)

        self._patch(httpx.Client, "send", patched_send)
        self._patch(httpx.AsyncClient, "send", patched_send_async)

    def _http_call(self, method: str, url: str, body: Any) -> None:
        try:
            record = http_generation_record(method, url, body)
        except Exception as exc:  # recording must never change what the harness sends
            record = {"record_error": f"{type(exc).__name__}: {exc}", "http": {"url": url}}
        if record is not None:
            self._record("call", {"label": self.label, **record})


# httpx, and httpx2 (what the `openai` client 3 sends through): the same Client/AsyncClient.send
HTTPX_MODULES = ("httpx", "httpx2")


def _request_body(request) -> bytes | None:
    try:
        return request.content
    except Exception:  # a streamed body: not a JSON completion request
        return None


def http_generation_record(method: str, url: str, body: Any) -> dict[str, Any] | None:
    """The call record of a POST to a server's generation endpoint (None for any other request).

    `endpoint` says what the server does with what was sent (`generation_route`): `completions`, the prompt
    as sent (`input_text`, or `input_ids` for token prompts), tokenized as a server tokenizes it
    (`tokenize_with_special_tokens`); `chat/completions`, the `messages`, which the server renders with
    its chat template. The other body fields, with the parameters a native endpoint nests (`parameters`, `sampling_params`, `options`), are `generate_kwargs`."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    if method.upper() != "POST":
        return None
    if isinstance(body, str):
        body = body.encode("utf-8")
    if not isinstance(body, (bytes, bytearray)):
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    route = generation_route(path, data)
    if route is None:
        return None
    endpoint, prompt_key = route
    location = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{path}"  # no credentials
    taken = (prompt_key, "messages", "model", *NESTED_SETTINGS, *(("system",) if endpoint == "chat/completions" else ()))
    settings = {k: v for k, v in data.items() if k not in taken}
    for nested in NESTED_SETTINGS:
        if isinstance(data.get(nested), dict):
            settings.update(data[nested])
    record: dict[str, Any] = {
        "http": {"url": location, "endpoint": endpoint, "model": data.get("model")},
        "generate_kwargs": jsonable(settings),
        "input_ids": None, "input_text": None, "output_ids": None,
    }
    if endpoint == "chat/completions":
        messages = data.get("messages")
        if prompt_key != "messages":  # Ollama's /api/generate without `raw`: the server templates the prompt
            messages = ([{"role": "system", "content": data["system"]}] if isinstance(data.get("system"), str)
                        else []) + [{"role": "user", "content": data.get(prompt_key)}]
        record["messages"] = jsonable(messages, max_items=256)
        return record
    prompt = data.get(prompt_key)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        record["input_ids"] = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
        record["input_ids"] = prompt
    else:
        texts = prompt if isinstance(prompt, list) else [prompt]
        record["input_text"] = [t for t in texts if isinstance(t, str)]
        record["tokenize_with_special_tokens"] = True
    return record


# the parameters a native endpoint nests: TGI's `parameters`, SGLang's `sampling_params`, Ollama's `options`
NESTED_SETTINGS = ("parameters", "sampling_params", "options")


def generation_route(path: str, data: dict[str, Any]) -> tuple[str, str] | None:
    """What a POST to `path` with the JSON body `data` asks a server for: (`completions` or `chat/completions`,
    the body key that holds the prompt or messages), or None when it is no generation request. Beside the
    OpenAI routes, the servers' own: llama.cpp's `/completion` (raw text or ids), TGI's and SGLang's
    `/generate` (`inputs`; `text` or `input_ids` beside `sampling_params`: raw), Ollama's `/api/chat` (messages) and `/api/generate`
    (the server templates the prompt unless `raw` is true)."""
    if path.endswith("/chat/completions"):
        return "chat/completions", "messages"
    if path.endswith("/completions"):
        return "completions", "prompt"
    if path.endswith("/api/chat"):
        return ("chat/completions", "messages") if isinstance(data.get("messages"), list) else None
    if path.endswith("/api/generate"):
        if not isinstance(data.get("prompt"), str):
            return None
        return ("completions", "prompt") if data.get("raw") is True else ("chat/completions", "prompt")
    if path.endswith("/completion"):
        return ("completions", "prompt") if "prompt" in data else None
    if path.endswith(("/generate", "/generate_stream")):
        if "inputs" in data:  # TGI
            return "completions", "inputs"
        if isinstance(data.get("sampling_params"), dict):  # SGLang (an app's own {"text": ...} route is not it)
            key = next((k for k in ("text", "input_ids") if k in data), None)
            return ("completions", key) if key else None
    return None


def _id_rows(tensor) -> list[list[int]] | None:
    """A 1-d or 2-d tensor of ids (or mask) as a list of rows; None for None."""
    if tensor is None or not hasattr(tensor, "tolist"):
        return None
    rows = tensor.tolist()
    return rows if rows and isinstance(rows[0], list) else [rows]


def prompt_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One prompt's records: its generate calls, else the decoding loop it wrote by hand."""
    return [r for r in records if r.get("via") != "forward"] or records


def _adapters_loaded(model) -> bool:
    """Whether PEFT adapters are attached to the model that generated (transformers' integration or peft)."""
    if getattr(model, "_hf_peft_config_loaded", False) or getattr(model, "peft_config", None):
        return True
    return any("lora_" in name for name, _ in model.named_modules())


def _named_arguments(signature, model, args, kwargs) -> dict[str, Any]:
    """generate's arguments by name (positional ones bound, **kwargs spread), those given as None left out."""
    bound = signature.bind_partial(model, *args, **kwargs)
    arguments = dict(bound.arguments)
    arguments.pop("self", None)
    extra = arguments.pop("kwargs", {}) or {}
    named = {k: v for k, v in arguments.items() if v is not None}
    named.update(extra)
    return named


def _unpadded(ids: list[int], mask: list[int] | None) -> list[int]:
    return ids if mask is None else [i for i, m in zip(ids, mask) if m]


def effective_generation_config(model, named: dict[str, Any]) -> dict[str, Any] | None:
    """The settings generate ran with: the passed (or the model's) GenerationConfig updated with the kwargs."""
    base = named.get("generation_config") or getattr(model, "generation_config", None)
    if base is None:
        return None
    config = copy.deepcopy(base)
    settable = {k: v for k, v in named.items() if k not in ("generation_config",) and hasattr(config, k)}
    try:
        config.update(**settable)
    except Exception:  # an invalid combination is for generation-config to report, not to crash on
        for key, value in settable.items():
            setattr(config, key, value)
    return jsonable(config.to_dict())


def tokenizer_state(tokenizer) -> dict[str, Any]:
    """The tokenizer settings that decide what a harness sends."""
    return {
        "class": type(tokenizer).__name__,
        "name_or_path": getattr(tokenizer, "name_or_path", None),
        "padding_side": getattr(tokenizer, "padding_side", None),
        "pad_token_id": getattr(tokenizer, "pad_token_id", None),
        "bos_token_id": getattr(tokenizer, "bos_token_id", None),
        "eos_token_id": getattr(tokenizer, "eos_token_id", None),
        "bos_token": getattr(tokenizer, "bos_token", None),
        "eos_token": getattr(tokenizer, "eos_token", None),
        "has_chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "vocab_size": len(tokenizer) if hasattr(tokenizer, "__len__") else None,
    }
