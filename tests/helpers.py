"""Helpers shared by the engine tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from ladder.registry import ProbeRegistry

import engine_probes


def engine_registry() -> ProbeRegistry:
    registry = ProbeRegistry(autoload=False)
    for probe in (engine_probes.FileCheck, engine_probes.NeedsData, engine_probes.CatchesEverything,
                  engine_probes.ReturnsNone, engine_probes.SharedModel):
        registry.register(probe.name, probe)
    return registry


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120):
    """`ladder ARGS` in a subprocess, as a user runs it."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "ladder", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path: compare before and after a run to show that
    ladder changed nothing of the user's (model, data, run folders)."""
    import hashlib

    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}
