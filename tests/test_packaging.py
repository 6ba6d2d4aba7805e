"""A non-editable install ships the default ladder and the TUI under the `ladder` import name."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_rules_and_tui_under_ladder(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                             "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "ladder/rules/llm-checkpoint.yaml" in names
    assert "ladder/tui/__init__.py" in names
    assert "ladder/report/report.schema.json" in names
    top_level = {name.split("/")[0] for name in names}
    assert top_level <= {"ladder", *[n for n in top_level if n.endswith(".dist-info")]}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[console_scripts]\nladder = ladder.cli:main" in text
