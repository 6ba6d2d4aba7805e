"""Shared resources of one run (model, tokenizer, base model, harness recordings, datasets).

Each is built lazily by the first rung that asks, at most once per run, and
released when the run ends. Rungs that need no model therefore finish before
torch is even imported.

A build that fails is one finding: the rung that asked first gets `ResourceFailed`
(an `error` naming the resource and the cause), every later rung that asks gets
`ResourceUnavailable` and is `blocked` by that first rung.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, TypeVar

if TYPE_CHECKING:
    from ladder.case import Case

T = TypeVar("T")

# what a resource key is, in words (keys not listed are shown as they are)
RESOURCE_NAMES = {"hf:model": "the model (`model`)", "hf:base": "the base model (`base`)",
                  "harness:calls": "your harness", "harness:calls:base": "your harness on the base model"}


def describe_resource(key: str) -> str:
    return RESOURCE_NAMES.get(key, key)


class ResourceFailed(Exception):
    """The first build of a resource failed; `cause` is why."""

    def __init__(self, key: str, cause: BaseException):
        super().__init__(f"{describe_resource(key)} could not be loaded: {type(cause).__name__}: {cause}")
        self.key, self.cause = key, cause


class ResourceUnavailable(Exception):
    """A resource whose build (or whose use) failed in an earlier rung, `rung`, which says why."""

    def __init__(self, key: str, rung: str | None):
        where = f"rung {rung!r} reported why" if rung else "it failed earlier in this run"
        super().__init__(f"{describe_resource(key)} is not available: {where}")
        self.key, self.rung = key, rung


class Resources:
    def __init__(self, case: "Case"):
        self.case = case
        self._values: dict[str, Any] = {}
        self._errors: dict[str, BaseException] = {}
        self._lock = threading.RLock()
        self._failed_in: dict[str, str | None] = {}  # resource key -> the rung that reported its failure
        self.current_rung: str | None = None  # set by the runner while a rung runs
        self.builds: Counter[str] = Counter()  # how often each resource was built (tests count loads)

    def get(self, key: str, build: Callable[[], T]) -> T:
        """The resource `key`, built by `build()` the first time. A failed build is not retried: the rung
        that asked first gets `ResourceFailed`, later rungs `ResourceUnavailable`."""
        with self._lock:
            if key in self._values:
                return self._values[key]
            if key in self._errors:
                first = self._failed_in.get(key)
                if first is not None and first != self.current_rung:
                    raise ResourceUnavailable(key, first)
                raise self._errors[key]
            self.builds[key] += 1
            try:
                value = build()
            except Exception as exc:
                failure = exc if isinstance(exc, (ResourceFailed, ResourceUnavailable)) else ResourceFailed(key, exc)
                self._errors[key] = failure
                self._failed_in.setdefault(key, self.current_rung)
                raise failure from exc
            self._values[key] = value
            return value

    def report_failure(self, key: str) -> None:
        """Say that `key` (built, but unusable: a harness that did not import) failed in the current rung;
        raises `ResourceUnavailable` when an earlier rung already said so."""
        with self._lock:
            first = self._failed_in.setdefault(key, self.current_rung)
            if first is not None and first != self.current_rung:
                raise ResourceUnavailable(key, first)

    def built(self) -> list[tuple[str, Any]]:
        """The resources built so far, (key, value)."""
        with self._lock:
            return list(self._values.items())

    def peek(self, key: str) -> Any | None:
        """The resource if already built, else None (never builds)."""
        return self._values.get(key)

    def release(self, key: str) -> None:
        """Forget one built resource (closing it), so the next `get` builds it afresh."""
        with self._lock:
            value = self._values.pop(key, None)
        closer = getattr(value, "close", None)
        if callable(closer):
            closer()

    @staticmethod
    def return_freed_memory() -> None:
        """Give the C heap's freed pages back to the system (glibc's `malloc_trim`), as each rung ends. The
        harness and every rung run in threads of their own, each with its malloc arena, which keeps the peak of
        that rung's activations after they are freed: left there, they add up in the process's peak RSS beside
        the next rung's. Nothing where the C library has no `malloc_trim` (macOS, musl)."""
        import ctypes

        try:
            ctypes.CDLL(None).malloc_trim(0)  # the process's own symbols: the C library it runs on
        except (OSError, AttributeError, TypeError):
            pass

    def close(self) -> None:
        """Release everything: call `close()` where a resource has one, free accelerator memory."""
        with self._lock:
            for value in self._values.values():
                closer = getattr(value, "close", None)
                if callable(closer):
                    try:
                        closer()
                    except Exception:  # releasing must not hide the run's result
                        pass
            self._values.clear()
            self._errors.clear()
            self._failed_in.clear()
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
