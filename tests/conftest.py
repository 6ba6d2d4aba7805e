"""Shared test setup: offline, and the tests folder importable for helper modules."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The caller's terminal settings must not reach what the tests render (snapshots, CLI tables):
# many people set NO_COLOR globally, CI sets COLUMNS or FORCE_COLOR.
for name in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES", "TERM_PROGRAM", "TEXTUAL", "TEXTUAL_THEME",
             "TEXTUAL_ANIMATIONS"):
    os.environ.pop(name, None)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))
