"""`ladder demo`: the founding case written where the user can open it, walked by the real CLI."""

from __future__ import annotations

import json

import pytest

from helpers import folder_digest, run_cli



@pytest.mark.parametrize("existing", ["data", "model", "run", "notes.txt"])
def test_the_demo_never_writes_into_a_folder_of_the_users(tmp_path, existing):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "train.jsonl").write_text('{"text": "mine"}\n')
    target = project / existing
    if "." in existing:
        target.write_text("my notes")
    else:
        target.mkdir(exist_ok=True)
        (target / "keep.txt").write_text("mine")
    before = folder_digest(project)
    result = run_cli("demo", "--out", str(project), timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--out" in result.stderr and "Traceback" not in result.stderr
    assert folder_digest(project) == before


def test_the_demo_refuses_a_file_as_its_folder(tmp_path):
    path = tmp_path / "not-a-folder"
    path.write_text("x")
    result = run_cli("demo", "--out", str(path), timeout=120)
    assert result.returncode == 2 and "not a folder" in result.stderr and path.read_text() == "x"


@pytest.mark.slow
def test_the_demo_rewrites_a_folder_it_wrote_and_keeps_what_the_user_added(tmp_path):
    from ladder.demo import DEMO_MARKER, prepare_demo

    out = tmp_path / "demo"
    prepare_demo(out, progress=None)
    (out / "my-notes.txt").write_text("mine")
    (out / "harness.py").write_text("edited")
    case = prepare_demo(out, fixed=True, progress=None)
    assert (out / DEMO_MARKER).is_file() and case == out / "case.yaml"
    assert (out / "my-notes.txt").read_text() == "mine"
    assert (out / "harness.py").read_text() != "edited"


@pytest.mark.slow
def test_keep_going_finds_the_data_half_too_and_changes_nothing_of_the_case(tmp_path):
    from ladder.demo import prepare_demo

    out = tmp_path / "demo"
    prepare_demo(out, progress=None)
    before = folder_digest(out)
    result = run_cli("probe", str(out / "case.yaml"), "--keep-going", "--json", str(tmp_path / "r.json"),
                     timeout=1800)
    assert result.returncode == 1, result.stderr[-3000:]
    assert folder_digest(out) == before, "a probe wrote into the demo's model, data or run folders"
    assert {"case.yaml", "harness.py", "model", "data", "run"} <= {p.name for p in out.iterdir()}
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["culprit"]["rung"] == "prompt-format"
    rungs = {r["id"]: r for r in report["rungs"]}
    data_count = rungs["data-count"]
    assert data_count["status"] == "fail", data_count["summary"]
    assert "54" in data_count["summary"] and "600" in data_count["summary"]  # both numbers, as in the story
    assert "loss_signature" in data_count["evidence"], data_count["evidence"]
    assert "side by side" in result.stdout and "<|im_start|>user" in result.stdout  # what was sent, both ways


@pytest.mark.slow
def test_fixed_finds_no_culprit(tmp_path):
    result = run_cli("demo", "--fixed", "--out", str(tmp_path / "fixed"), "--json", str(tmp_path / "r.json"),
                     timeout=1800)
    report = json.loads((tmp_path / "r.json").read_text())
    assert result.returncode == 0, [(r["id"], r["status"], r["summary"]) for r in report["rungs"]]
    assert report["culprit"] is None
    assert not [r["id"] for r in report["rungs"] if r["status"] in ("fail", "error")]
