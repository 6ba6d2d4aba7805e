"""`ladder sweep`: one run per checkpoint with the harness's loads redirected to it, in parallel, and one
matrix; a checkpoint that breaks (NaN weights from a step on) is the first where its rung turns to fail."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from helpers import run_cli
from interface_models import chat_model_dir, variant_harness

pytestmark = pytest.mark.slow

RUNGS = ["load-report", "prompt-format", "numerics"]


def checkpoints(root, broken_from: int):
    from safetensors.torch import load_file, save_file

    source = chat_model_dir("chatml")
    out = []
    for step in (100, 200, 300):
        folder = root / f"checkpoint-{step}"
        shutil.copytree(source, folder)
        if step >= broken_from:
            tensors = load_file(str(folder / "model.safetensors"))
            tensors["model.layers.1.mlp.down_proj.weight"][0, 0] = float("nan")
            save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        out.append(folder)
    return out


@pytest.mark.parametrize("where", [["--jobs", "2"], ["--ray", "local"]], ids=["processes", "ray"])
def test_the_sweep_finds_the_first_checkpoint_where_a_rung_turns_to_fail(tmp_path, where):
    from ladder.loader import load_ladder

    if "--ray" in where:
        pytest.importorskip("ray", reason="Ray is the optional extra ladder-debug[ray]")
    ckpts = checkpoints(tmp_path / "run", broken_from=300)
    harness = variant_harness(tmp_path / "harness", ckpts[0], mode="template", batch=False)
    ladder_file = tmp_path / "ladder.yaml"
    ladder_file.write_text(json.dumps({"name": "sweep-test", "extends": "llm-checkpoint",
                                       "disable": [r for r in load_ladder().order if r not in RUNGS]}))
    out = tmp_path / "sweep.json"
    done = run_cli("sweep", "--model", str(ckpts[0]), "--harness", harness, "--ladder", str(ladder_file),
                   "--models", str(tmp_path / "run" / "checkpoint-*"), *where, "--json", str(out),
                   "--md", str(tmp_path / "sweep.md"), "--html", str(tmp_path / "sweep.html"), timeout=600)
    assert done.returncode == 1, (done.stdout, done.stderr)
    sweep = json.loads(out.read_text())
    assert sweep["schema"] == "ladder.sweep/1" and sweep["rungs"] == RUNGS
    rows = {row["model"].rsplit("/", 1)[-1]: row for row in sweep["rows"]}
    assert list(rows) == ["checkpoint-100", "checkpoint-200", "checkpoint-300"]
    assert [rows[name]["culprit"] for name in rows] == [None, None, "numerics"], {n: r["verdicts"] for n, r in
                                                                                rows.items()}
    assert sweep["turns"]["numerics"]["failed"].endswith("checkpoint-300")
    assert sweep["turns"]["numerics"]["passed"].endswith("checkpoint-200")
    for name, row in rows.items():  # the harness ran each checkpoint, not the one it names
        loaded = next(r for r in row["report"]["rungs"] if r["id"] == "load-report")["evidence"]["harness_loaded"]
        assert [path.rsplit("/", 1)[-1] for path in loaded] == [name], loaded
    assert all(row["ran_on"].startswith("ray node " if "--ray" in where else "here") for row in rows.values())
    assert "| checkpoint-300 | numerics |" in (tmp_path / "sweep.md").read_text()
    page = (tmp_path / "sweep.html").read_text()
    from ladder.report.html import COLOURS

    assert re.search(r"<td>checkpoint-300</td>(<td[^>]*>[^<]*</td>)*<td class='cell' style='background:"
                     + COLOURS["fail"] + r"'>fail</td>", page), page
    assert "checkpoint-300" in done.stdout and "numerics" in done.stdout


def test_a_sweep_over_nothing_is_bad_input(tmp_path):
    done = run_cli("sweep", "--models", str(tmp_path / "nothing-*"))
    assert done.returncode == 2 and "matches no folder" in done.stderr and "Traceback" not in done.stderr


def test_local_runs_take_a_gpu_each_and_never_share_one(monkeypatch):
    """With GPUs, each checkpoint's process sees one GPU of its own (CUDA_VISIBLE_DEVICES), at most one run
    per GPU at a time."""
    import subprocess
    import threading
    import time

    from ladder import sweep

    seen, lock, busy = [], threading.Lock(), set()

    class FakeProcess:  # stands in for `ladder probe`: records the GPU it was given and holds it a while
        returncode = 0

        def __init__(self, command, env, **kwargs):
            self.pid, self.gpu = -1, env.get("CUDA_VISIBLE_DEVICES")
            with lock:
                assert self.gpu not in busy, "two runs on one GPU"
                busy.add(self.gpu)
                seen.append(self.gpu)

        def communicate(self):
            time.sleep(0.05)
            with lock:
                busy.discard(self.gpu)
            return "", "no report"

    monkeypatch.setattr(subprocess, "Popen", FakeProcess)
    result = sweep.run_sweep(None, [f"/ckpt-{i}" for i in range(6)], overrides=[], gpus=["0", "1"])
    assert set(seen) == {"0", "1"} and len(seen) == 6 and len(result.rows) == 6, seen
