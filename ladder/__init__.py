"""ladder: is the model broken, or is the way you test it broken?

The engine (ladder format, rung graph, runner, reports) is importable without
torch or transformers; probes import them lazily when they run.
"""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

# In a source checkout the top-level `rules/` and `tui/` folders are what a wheel
# installs as `ladder/rules` and `ladder/tui`: let `ladder.tui` resolve to them.
_SOURCE_ROOT = Path(__file__).resolve().parent.parent
if (_SOURCE_ROOT / "pyproject.toml").is_file() and (_SOURCE_ROOT / "tui").is_dir():
    __path__.append(str(_SOURCE_ROOT))  # type: ignore[name-defined]


def rules_dir() -> Path:
    """The folder holding the shipped ladders (`ladder/rules` installed, `rules/` in a checkout)."""
    installed = Path(__file__).resolve().parent / "rules"
    return installed if installed.is_dir() else _SOURCE_ROOT / "rules"
