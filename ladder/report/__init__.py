"""Reports: JSON (`ladder.report/1`), JUnit XML and Markdown, all passed through `redact` first."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).with_name("report.schema.json")

# environment variables whose values are secrets (HF_TOKEN, OPENAI_API_KEY, ...)
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.I)
# report keys that hold a credential: `token`, `api_key`, `hf_token`, `password`; not the evidence's
# `bos_token`, `special_tokens`, `max_new_tokens` or `versions.tokenizers`
_SECRET_KEY = re.compile(
    r"^(token|secret|credentials?|authorization)$"
    r"|(api|access|secret|private)[_\-]?key$"
    r"|client[_\-]?secret$"
    r"|(api|access|auth|bearer|refresh|session|hf|github|openai)[_\-]?token$"
    r"|(password|passwd)$", re.I)
_SECRET_SHAPES = [
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),
    re.compile(r"\bhf_[A-Za-z0-9]{20,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._\-]{8,}"),
]
REDACTED = "***"


def _secret_values() -> list[str]:
    return sorted((v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 8),
                  key=len, reverse=True)


def redact(value: Any, secrets: list[str] | None = None) -> Any:
    """A copy of `value` with API keys and tokens replaced by ***: from the environment, and by shape."""
    if secrets is None:
        secrets = _secret_values()
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        for shape in _SECRET_SHAPES:
            value = shape.sub(REDACTED, value)
        return value
    if isinstance(value, dict):
        return {k: (REDACTED if _SECRET_KEY.search(str(k)) and isinstance(v, str) and v else redact(v, secrets))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, secrets) for v in value]
    return value
