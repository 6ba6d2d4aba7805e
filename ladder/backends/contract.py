"""The contract between a probe and the model as ladder reaches it: `Backend`.

A backend declares what it can do as `capabilities` and offers a method for each thing a probe needs:

| capability      | methods                                                   | hf | openai |
| --------------- | --------------------------------------------------------- | -- | ------ |
| `chat_template` | `render(messages)`: the conversation as the model's ids     | ✓  |        |
| `tokenize`      | `tokenize(text)`, `detokenize(ids)`, `tokenizer`            | ✓  |        |
| `generate`      | `generate(batch, stop_ids=…)` greedy from ids, `stop_ids()`, `generation_config` | ✓ | |
| `logits`        | `score(pairs)`: log-probabilities of continuations; `greedy_agreement(pairs)`: and whether each token is the greedy choice | ✓ | |
| `weights`, `hidden_states` | `network`: the in-process network (weights, layer hooks, its own forward passes; also under `logits`) | ✓ | |
| `chat`          | `chat(messages)`: a chat completion, rendered by the server |    | ✓      |
| `completions`   | `complete(prompt)`: raw text completion                   |    | ✓      |
| `render_template` | `rendering(messages)`: the server's own rendering       |    | where the server shows it |

A method whose capability the backend lacks raises `MissingCapability` (the runner reports a `skip` that names
it). While a rung runs, a probe may only use what its class declares in `capabilities`: using anything else
raises `UndeclaredCapability`, which the runner reports as the probe's `error`, so that the capability check
made before each rung (a skip where no reached backend offers what the probe declares) covers everything
the probe does. Probes get their backend from `model_backend(ctx)` (the checkpoint) and
`served_model(ctx)` (the server).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar


class MissingCapability(Exception):
    """The backend cannot do what was asked (e.g. token scores from a server that returns no logprobs)."""

    def __init__(self, backend: str, capability: str):
        super().__init__(f"the {backend} backend has no `{capability}` capability")
        self.backend = backend
        self.capability = capability


class UndeclaredCapability(Exception):
    """A probe used a capability its class does not declare (a bug in the probe, reported as its error)."""


def require(backend: "Backend", *capabilities: str) -> None:
    """Check that `backend` offers one of `capabilities` and that the running probe declared one of them.
    Outside a rung (a test, a notebook) only the first check applies."""
    if not any(capability in backend.capabilities for capability in capabilities):
        raise MissingCapability(backend.name, " or ".join(capabilities))
    from ladder.probes.base import running_rung

    declared = getattr(running_rung, "capabilities", None)
    if declared is not None and not any(capability in declared for capability in capabilities):
        probe = getattr(running_rung, "probe", "the probe")
        raise UndeclaredCapability(
            f"{probe} used the `{' or '.join(capabilities)}` capability of the {backend.name} backend without "
            f"declaring it (its capabilities: {', '.join(sorted(declared)) or 'none'})")


class Backend(ABC):
    """The model as ladder reaches it. Subclasses set `name`, `how_to_reach` (the flag that reaches the model
    through them), `capabilities`, implement `reaches(case)` and `close()`, and override the methods of the
    capabilities they offer; the others raise `MissingCapability`."""

    name: ClassVar[str] = ""
    how_to_reach: ClassVar[str] = ""
    capabilities: frozenset[str] = frozenset()

    @staticmethod
    @abstractmethod
    def reaches(case: Any) -> bool:
        """Whether the case reaches the model through this backend."""

    @abstractmethod
    def close(self) -> None:
        """Let go of what the backend holds (weights, temporary folders, connections)."""

    def _lacks(self, capability: str):
        raise MissingCapability(self.name, capability)

    # ---- prompts: `chat_template`, `tokenize` ----------------------------------------

    def has_chat_template(self) -> bool:
        """Whether the model ships a chat template (`render` renders with it)."""
        return False

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """The token ids the model's own chat template gives for `messages`."""
        self._lacks("chat_template")

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """`text` as the model's token ids (with the tokenizer's BOS and the like unless told not to)."""
        self._lacks("tokenize")

    def detokenize(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        self._lacks("tokenize")

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer object, for what the methods above do not say (its special tokens, its
        padding side, its added tokens)."""
        self._lacks("tokenize")

    # ---- running: `generate`, `logits` -----------------------------------------------

    def stop_ids(self) -> set[int]:
        """The ids generation stops on by default (the model's eos)."""
        self._lacks("generate")

    @property
    def generation_config(self) -> Any:
        """The generation settings the model ships (its `generation_config.json`)."""
        self._lacks("generate")

    def generate(self, batch: list[list[int]], *, max_new_tokens: int = 32, stop_ids: set[int] | None = None,
                 padding_side: str = "left", pad_token_id: int | None = None, attention_mask: bool = True,
                 **settings: Any) -> list[list[int]]:
        """Greedy continuations of each prompt in `batch` (new ids only, cut after the first of `stop_ids`,
        the model's own when None), padded on `padding_side` with `pad_token_id`, with or without an
        attention mask (a harness's batch reproduced as it sends it)."""
        self._lacks("generate")

    def greedy_replies(self, batch: list[list[int]], *, max_new_tokens: int, stop_ids: set[int]) -> list[list[int]]:
        """`generate(batch, ...)` with ladder's own settings: the model's greedy reply to each prompt, which a
        backend may share between the rungs that ask for it (a reply is the same whatever batch it ran in)."""
        return self.generate(batch, max_new_tokens=max_new_tokens, stop_ids=stop_ids)

    def remembered_greedy(self, prompt: list[int], *, max_new_tokens: int,
                          stop_ids: set[int]) -> tuple[list[int], list[float]] | None:
        """The greedy reply to `prompt` and its next-token entropy at each step, when the backend still holds
        them from a generation earlier in the run; None (the default) when it must be generated."""
        return None

    def score(self, pairs: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        """Per-token log-probabilities of each continuation given its prompt (teacher-forced)."""
        self._lacks("logits")

    def greedy_agreement(self, pairs: list[tuple[list[int], list[int]]]) -> tuple[list[list[float]], list[list[bool]]]:
        """`score(pairs)` and, per continuation token, whether it is the model's greedy (top-1) choice there:
        a continuation is what greedy decoding from its prompt produces exactly when every token is, so this
        answers "does the model recite it?" in one teacher-forced pass, without generating."""
        self._lacks("logits")

    # ---- internals: `weights`, `hidden_states` ---------------------------------------

    @property
    def network(self) -> Any:
        """The network itself (in-process): its weights, its layers for hooks, its own forward passes."""
        self._lacks("weights")

    # ---- served: `chat`, `completions`, `render_template` ----------------------------

    def chat(self, messages: list[dict[str, str]], max_tokens: int, greedy: bool = True) -> Any:
        self._lacks("chat")

    def complete(self, prompt: str, max_tokens: int, logprobs: bool = False) -> Any:
        self._lacks("completions")

    def rendering(self, messages: list[dict[str, str]]) -> Any:
        self._lacks("render_template")
