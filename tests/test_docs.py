"""Docs generated from the ladder stay true: the README's rung table, each probe's docstring."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ladder.cli import rules_markdown
from ladder.loader import load_ladder
from ladder.registry import ProbeRegistry

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("What it checks", "Why it matters", "Symptom", "Fix")


def test_readme_rung_table_matches_the_shipped_ladder():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = re.search(r"<!-- rungs:start -->\n(.*?)<!-- rungs:end -->", readme, re.S).group(1)
    assert table == rules_markdown(load_ladder()), "run `ladder rules --markdown` and paste it into README.md"


def test_every_shipped_probe_documents_itself():
    registry = ProbeRegistry(autoload=False)
    for rung in load_ladder(registry=registry).rungs:
        probe = registry.get(rung.probe)
        doc = sys.modules[probe.__module__].__doc__ or ""
        missing = [s for s in SECTIONS if s not in doc]
        assert not missing, f"{probe.__module__} docstring lacks {missing}"
        assert rung.why.strip() and rung.fix.strip()


def test_readme_names_the_ci_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    def commands(text: str) -> set[str]:
        return {line.split("#")[0].strip() for line in text.splitlines() if "python -m pytest" in line}

    assert commands(readme) == commands(ci) == {"HF_HUB_OFFLINE=1 python -m pytest -q"}
