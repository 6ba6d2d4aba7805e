"""Shared resources of one run (model, tokenizer, base model, harness recordings, datasets).

Each is built lazily by the first rung that asks, at most once per run, and
released when the run ends. Rungs that need no model therefore finish before
torch is even imported.
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


class Resources:
    def __init__(self, case: "Case"):
        self.case = case
        self._values: dict[str, Any] = {}
        self._errors: dict[str, BaseException] = {}
        self._lock = threading.RLock()
        self.builds: Counter[str] = Counter()  # how often each resource was built (tests count loads)

    def get(self, key: str, build: Callable[[], T]) -> T:
        """The resource `key`, built by `build()` the first time. A failed build is not retried."""
        with self._lock:
            if key in self._values:
                return self._values[key]
            if key in self._errors:
                raise self._errors[key]
            self.builds[key] += 1
            try:
                value = build()
            except Exception as exc:
                self._errors[key] = exc
                raise
            self._values[key] = value
            return value

    def peek(self, key: str) -> Any | None:
        """The resource if already built, else None (never builds)."""
        return self._values.get(key)

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
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
