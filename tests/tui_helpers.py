"""A small test ladder for the TUI: cheap real probes whose verdicts come from real files.

Each probe reads files written into tmp_path, so a test breaks or fixes a rung by
writing a file, as a user fixes their harness, and the evidence has the shapes the
TUI renders (side by side, a series with flagged indices, tables, a traceback).
Evidence names files, never full paths, so snapshots do not depend on tmp_path.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from helpers import write
from ladder.case import Case
from ladder.loader import Ladder, load_ladder
from ladder.probes.base import Probe, ProbeContext, failed, passed, skip, warned
from ladder.registry import ProbeRegistry


class PathParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(default=None, description="the file or folder the probe reads")
    sleep: float = Field(default=0.0, description="seconds of (cancellable) work first")
    threshold: float = Field(default=0.3, description="largest jump between neighbours that is fine")


def _work(ctx: ProbeContext) -> None:
    steps = max(int(ctx.params.sleep / 0.1), 0)
    for step in range(steps):
        ctx.progress(f"step {step + 1} of {steps}", (step + 1) / steps)
        time.sleep(0.1)


class FilePresent(Probe):
    """What it checks: a file exists and is not empty (a missing one crashes: an error)."""

    name = "tui-file-present"
    Params = PathParams

    def run(self, ctx: ProbeContext):
        _work(ctx)
        if not ctx.params.path:
            skip("needs the `path` param")
        path = Path(ctx.params.path)
        size = path.stat().st_size
        if size == 0:
            return failed(f"{path.name} is empty", file=path.name, bytes=size)
        return passed(f"{path.name} has {size} bytes", file=path.name, bytes=size)


class FormatCompare(Probe):
    """What it checks: what the harness sent is what the template sends (files in a folder)."""

    name = "tui-format-compare"
    Params = PathParams

    def run(self, ctx: ProbeContext):
        folder = Path(ctx.params.path)
        read = {name: (folder / f"{name}.txt").read_text(encoding="utf-8")
                for name in ("prompt", "harness_sent", "template_sends", "harness_answer", "template_answer",
                             "expect")}
        expect = read.pop("expect").strip()
        correct = {side: float(read[f"{side}_answer"].strip() == expect) for side in ("harness", "template")}
        evidence = {
            "side_by_side": read,
            "metrics": {"answer correct": correct,
                        "prompt characters": {"harness": len(read["harness_sent"]),
                                              "template": len(read["template_sends"])}},
        }
        if read["harness_sent"] != read["template_sends"]:
            return failed("the harness does not send what the chat template sends "
                          f"(correct answers: harness {correct['harness']:.0%}, template {correct['template']:.0%})",
                          **evidence)
        return passed("the harness sends what the chat template sends", **evidence)


class SeriesJump(Probe):
    """What it checks: no jump between neighbouring values of a per-layer series (a JSON list)."""

    name = "tui-series-jump"
    Params = PathParams

    def run(self, ctx: ProbeContext):
        _work(ctx)
        values = json.loads(Path(ctx.params.path).read_text(encoding="utf-8"))
        flagged = [i for i in range(1, len(values)) if abs(values[i] - values[i - 1]) > ctx.params.threshold]
        evidence = {"series": {"cosine to previous layer": values}, "flagged": flagged,
                    "threshold": ctx.params.threshold}
        if flagged:
            return failed(f"the series jumps at {', '.join(map(str, flagged))}", **evidence)
        return passed("no jump between neighbouring layers", **evidence)


class ConfigKeys(Probe):
    """What it checks: every intended config value is the effective one (two JSON files in a folder)."""

    name = "tui-config-keys"
    Params = PathParams

    def run(self, ctx: ProbeContext):
        folder = Path(ctx.params.path)
        intended = json.loads((folder / "intended.json").read_text(encoding="utf-8"))
        effective = json.loads((folder / "effective.json").read_text(encoding="utf-8"))
        keys = {key: {"intended": intended.get(key), "effective": effective.get(key)}
                for key in [*intended, *[k for k in effective if k not in intended]]}
        differ = [key for key, pair in keys.items() if pair["intended"] != pair["effective"]]
        if differ:
            return warned(f"{len(differ)} key(s) differ: {', '.join(differ)}", keys=keys)
        return passed(f"all {len(keys)} keys as intended", keys=keys)


TUI_PROBES = (FilePresent, FormatCompare, SeriesJump, ConfigKeys)


def tui_registry() -> ProbeRegistry:
    registry = ProbeRegistry(autoload=False)
    for probe in TUI_PROBES:
        registry.register(probe.name, probe)
    return registry


def write_case_files(root: Path, *, harness_fixed: bool = False, seam: bool = False) -> None:
    """The files the test ladder's probes read: the harness sends raw text unless fixed."""
    template = "<|im_start|>user\nWhat is 12 plus 7?<|im_end|>\n<|im_start|>assistant\n"
    write(root / "harness.py", "def generate(prompt):\n    return model(prompt)\n")
    write(root / "data.jsonl", '{"text": "12 plus 7 is 19"}\n')
    fmt = root / "format"
    for name, text in {"prompt": "What is 12 plus 7?",
                       "harness_sent": template if harness_fixed else "What is 12 plus 7?",
                       "template_sends": template,
                       "harness_answer": "19" if harness_fixed else "What is 12 plus 7? What is 12 plus 8? What is",
                       "template_answer": "19", "expect": "19"}.items():
        fmt.mkdir(parents=True, exist_ok=True)
        (fmt / f"{name}.txt").write_text(text, encoding="utf-8")
    layers = [0.97, 0.96, 0.95, 0.96, 0.95, 0.94, 0.95, 0.94, 0.93, 0.94, 0.93, 0.92]
    if seam:
        layers[6:8] = [0.31, 0.42]
    (root / "layers.json").write_text(json.dumps(layers), encoding="utf-8")
    (root / "config").mkdir(exist_ok=True)
    (root / "config" / "intended.json").write_text(json.dumps({"learning_rate": 2e-5, "epochs": 3,
                                                               "max_length": 2048}), encoding="utf-8")
    (root / "config" / "effective.json").write_text(json.dumps({"learning_rate": 2e-5, "epochs": 3,
                                                                "max_length": 2048}), encoding="utf-8")


def make_ladder(root: Path, registry: ProbeRegistry, *, extra: str = "") -> Ladder:
    """harness-file, format (after harness-file), data-file, config-keys, seam (after format, data-file)."""
    text = f"""
    name: tui-test
    description: a small ladder of cheap real probes
    rungs:
      - id: harness-file
        title: the harness file is missing or empty
        tier: interface
        probe: tui-file-present
        params: {{path: {root / 'harness.py'}}}
        why: Without the harness nothing else can be checked.
        fix: Point the case at your harness file.
      - id: format
        title: the harness does not send prompts in the format the model was tuned on
        tier: interface
        probe: tui-format-compare
        params: {{path: {root / 'format'}}}
        after: [harness-file]
        why: A chat model fed raw text looks exactly like a broken model. Verify the harness first.
        fix: Apply the chat template in the harness (tokenizer.apply_chat_template) before generating.
      - id: data-file
        title: the training data is missing
        tier: data
        probe: tui-file-present
        params: {{path: {root / 'data.jsonl'}}}
        why: A model trained on nothing knows nothing.
        fix: Point the case at the training data.
      - id: config-keys
        title: a configured value was never read
        tier: config
        probe: tui-config-keys
        params: {{path: {root / 'config'}}}
        why: A misspelled key silently keeps its default.
        fix: Spell the key as the trainer reads it.
      - id: seam
        title: a discontinuity between consecutive layers
        tier: architecture
        probe: tui-series-jump
        params: {{path: {root / 'layers.json'}, threshold: 0.3}}
        after: [format, data-file]
        why: A spliced block breaks the residual stream.
        fix: Re-merge without the seam.
    {extra}"""
    return load_ladder(write(root / "tui-ladder.yaml", text), registry)


def make_case(root: Path) -> Case:
    return Case(model=str(root / "model"), base=str(root / "base"), harness=f"{root / 'harness.py'}:generate")


# ---- driving the app in tests -------------------------------------------------------------------


async def settle(pilot, timeout: float = 30) -> None:
    """Wait until no rung runs and every runner event has reached the screen."""
    deadline = time.monotonic() + timeout
    await pilot.pause()
    while pilot.app.walk.busy:
        assert time.monotonic() < deadline, "the walk did not finish"
        await pilot.app.workers.wait_for_complete()
        await pilot.pause(0.02)
    await pilot.pause()


async def wait_for(pilot, condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await pilot.pause(0.02)
