"""The text of a data row, normalised and hashed, and MinHash signatures for near duplicates."""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from typing import Any

ASSISTANT_ROLES = {"assistant", "gpt", "model", "bot", "chatbot"}
PROMPT_FIELDS = ("prompt", "instruction", "question", "input", "query")
_SPACE = re.compile(r"\s+")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


# Role names of other chat formats (ShareGPT's human/gpt, Gemma's model) as chat templates name them.
ROLE_NAMES = {"human": "user", "gpt": "assistant", "model": "assistant"}


def chat_turns(value: Any) -> list[dict[str, str]] | None:
    """[{role, content}] when `value` is a chat (a list of {role|from, content|value} dicts), roles named
    as chat templates name them and content parts joined into text; None when it is not a chat."""
    if not isinstance(value, list) or not value or not all(isinstance(t, dict) for t in value):
        return None
    turns = []
    for turn in value:
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        if not isinstance(role, str):
            return None
        text = content if isinstance(content, str) else " ".join(_strings(content))
        turns.append({"role": ROLE_NAMES.get(role, role), "content": text})
    return turns


def row_text(row: dict[str, Any], field: str | None = None) -> str:
    """The row's text: its `field` if named, else every string in it, in order."""
    value = row.get(field) if field else row
    turns = chat_turns(value)
    if turns is not None:
        return "\n".join(f"{t['role']}: {t['content']}" for t in turns)
    return "\n".join(_strings(value))


def prompt_text(row: dict[str, Any]) -> str | None:
    """What the row asks: the non-assistant turns of a chat, or a prompt-like field; None if neither."""
    for value in row.values():
        turns = chat_turns(value)
        if turns is not None:
            asked = [t["content"] for t in turns if t["role"].lower() not in ASSISTANT_ROLES]
            return "\n".join(asked) if asked else None
    for name in PROMPT_FIELDS:
        if isinstance(row.get(name), str) and row[name].strip():
            return row[name]
    return None


def normalise(text: str) -> str:
    """Case, Unicode form and whitespace folded, so trivially different copies compare equal."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_hash(text: str) -> int:
    """A 64-bit hash of normalised text, stable across runs."""
    return int.from_bytes(hashlib.blake2b(normalise(text).encode("utf-8"), digest_size=8).digest(), "little")


class MinHasher:
    """MinHash signatures over word n-grams of normalised text (numpy, fixed seed).

    Words, not characters: templated rows that differ in a number or a name ("What is 12 plus
    34?" / "... 35?") share most character n-grams but few word n-grams, and are not copies."""

    PRIME = (1 << 61) - 1
    _WORD = re.compile(r"\w+")

    def __init__(self, permutations: int = 64, ngram: int = 3, seed: int = 1):
        import numpy as np

        rng = np.random.default_rng(seed)
        self.np = np
        self.ngram = ngram
        # multipliers of full width: the products wrap around 2**64 and so scramble the order of
        # the n-gram hashes (small multipliers would keep it, and every permutation would pick the same min)
        self.a = rng.integers(1, self.PRIME, size=(permutations, 1), dtype=np.uint64)
        self.b = rng.integers(0, self.PRIME, size=(permutations, 1), dtype=np.uint64)
        self.mix = rng.integers(1, self.PRIME, size=ngram, dtype=np.uint64) | np.uint64(1)

    def signature(self, text: str):
        np = self.np
        words = self._WORD.findall(normalise(text)) or [""]
        tokens = np.fromiter((zlib.crc32(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words))
        n = min(self.ngram, len(tokens))
        grams = tokens[: len(tokens) - n + 1] * self.mix[0]
        for k in range(1, n):
            grams = grams + tokens[k: len(tokens) - n + 1 + k] * self.mix[k]
        grams = np.unique(grams)
        return ((self.a * grams + self.b) % np.uint64(self.PRIME)).min(axis=1)
