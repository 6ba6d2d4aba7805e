"""Small probes for engine tests: real verdicts on real files, no model needed.

`file-check` passes when the file named by its `path` param exists and is
non-empty, fails when it is empty, and skips when the param is missing.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ladder.probes.base import Probe, ProbeContext, failed, passed, skip


class FileCheckParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(default=None, description="file to check")
    sleep: float = Field(default=0.0, description="seconds to wait first")


class FileCheck(Probe):
    """What it checks: a file is non-empty."""

    name = "file-check"
    Params = FileCheckParams

    def run(self, ctx: ProbeContext):
        params = ctx.params
        if params.sleep:
            deadline = time.monotonic() + params.sleep
            while time.monotonic() < deadline:
                ctx.progress("waiting", None)
                time.sleep(0.02)
        if not params.path:
            skip("needs the `path` param")
        path = Path(params.path)
        size = path.stat().st_size  # a missing file raises: an error, never a verdict
        if size == 0:
            return failed(f"{path.name} is empty", path=str(path), bytes=size)
        return passed(f"{path.name} has {size} bytes", path=str(path), bytes=size)


class NeedsData(Probe):
    """What it checks: that the case gives training data."""

    name = "needs-data"
    needs = ("data",)

    def run(self, ctx: ProbeContext):
        return passed("data given", data=ctx.case.data)


class CatchesEverything(Probe):
    """A probe that (wrongly) catches Exception around skip: skip must still get through."""

    name = "catches-everything"

    def run(self, ctx: ProbeContext):
        try:
            skip("cannot measure")
        except Exception:  # noqa: BLE001 - the point of the test
            return passed("swallowed")
        return passed("unreachable")


class ReturnsNone(Probe):
    name = "returns-none"

    def run(self, ctx: ProbeContext):
        return None


class EchoTextParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(default="", description="text the finding carries, as a harness's reply would")


class EchoText(Probe):
    """Fails with its `text` param as summary and side-by-side evidence: what a harness or model wrote
    reaches the table, the reports and the TUI exactly as a real finding's would."""

    name = "echo-text"
    Params = EchoTextParams

    def run(self, ctx: ProbeContext):
        text = ctx.params.text
        return failed(f"your harness said {text}", side_by_side={
            "prompt": text, "harness_sent": text, "template_sends": text + "!",
            "harness_answer": text, "template_answer": ""}, samples=[{"reply": text}])


STOP_SPINNING = threading.Event()  # the tests' way to end a spin-forever probe they abandoned


class ModelParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: str = Field(default="use", description="use | forward-forever | spin-forever | cast | fail-load")


class SharedModel(Probe):
    """Does something to the run's shared model (`model_backend`): uses it, runs forward passes forever,
    spins forever without one, casts it to float16 and returns pass, or needs a model that cannot load."""

    name = "shared-model"
    needs = ("model",)
    capabilities = ("weights",)
    Params = ModelParams

    def run(self, ctx: ProbeContext):
        import torch

        from ladder.backends import model_backend

        action = ctx.params.action
        model = model_backend(ctx)
        ids = torch.tensor([[1, 5, 6, 7]])
        if action == "forward-forever":
            with torch.no_grad():
                while True:
                    model.network(input_ids=ids)
        if action == "spin-forever":  # no forward pass, no progress call: it cannot be cancelled
            while not STOP_SPINNING.is_set():
                time.sleep(0.01)
            return passed("stopped spinning")
        if action == "cast":
            model.network.to(torch.float16)
            return passed("cast the shared model to float16 and said nothing")
        with torch.no_grad():
            logits = model.network(input_ids=ids).logits
        return passed(f"the shared model ran: {str(logits.dtype)}", dtype=str(logits.dtype),
                      fingerprint=model.fingerprint())
