"""`ladder demo`: the founding case written where the user can open it, walked by the real CLI."""

from __future__ import annotations

import json

import pytest

from helpers import run_cli

pytestmark = pytest.mark.slow


def test_keep_going_finds_the_data_half_too(tmp_path):
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", str(out), "--keep-going", "--json", str(tmp_path / "r.json"), timeout=1800)
    assert result.returncode == 1, result.stderr[-3000:]
    assert {"case.yaml", "harness.py", "model", "data", "run"} <= {p.name for p in out.iterdir()}
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["culprit"]["rung"] == "prompt-format"
    rungs = {r["id"]: r for r in report["rungs"]}
    data_count = rungs["data-count"]
    assert data_count["status"] == "fail", data_count["summary"]
    assert "54" in data_count["summary"] and "600" in data_count["summary"]  # both numbers, as in the story
    assert "loss_signature" in data_count["evidence"], data_count["evidence"]
    assert "side by side" in result.stdout and "<|im_start|>user" in result.stdout  # what was sent, both ways


def test_fixed_finds_no_culprit(tmp_path):
    result = run_cli("demo", "--fixed", "--out", str(tmp_path / "fixed"), "--json", str(tmp_path / "r.json"),
                     timeout=1800)
    report = json.loads((tmp_path / "r.json").read_text())
    assert result.returncode == 0, [(r["id"], r["status"], r["summary"]) for r in report["rungs"]]
    assert report["culprit"] is None
    assert not [r["id"] for r in report["rungs"] if r["status"] in ("fail", "error")]
