"""What a probe is: a class with declared inputs, declared backend capabilities,
a pydantic params model and a `run(ctx) -> Finding` method.

A probe decides with evidence. It returns `pass`, `fail` or `warn` through the
helpers below, calls `skip(reason)` when the case lacks what it needs, and lets
exceptions propagate: the runner turns them into `error`, never into a verdict.
`skip` raises an exception derived from BaseException (as pytest's outcomes do),
so a probe's own `except Exception` cannot swallow it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict

from ladder.models import Finding, Rung, Status

if TYPE_CHECKING:
    from ladder.case import Case
    from ladder.resources import Resources


class NoParams(BaseModel):
    """A probe without parameters."""

    model_config = ConfigDict(extra="forbid")


class Probe:
    """Base class of every probe.

    `needs` names case inputs (see `ladder.case.NEEDS`); a rung whose probe needs
    an input the case lacks is skipped with the flag that would provide it.
    `capabilities` names what the backend must offer (`generate`, `logits`,
    `hidden_states`, `weights`, `chat_template`, `tokenize`; `chat`, `completions`
    over HTTP: see `ladder.backends.contract`); a missing one is a skip with its
    reason. `optional_capabilities` are used where the backend offers them (a
    server's `render_template`) and never cause a skip. While the probe runs, the
    backend refuses a capability it declared in neither (`UndeclaredCapability`).
    """

    name: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()
    capabilities: ClassVar[tuple[str, ...]] = ()
    optional_capabilities: ClassVar[tuple[str, ...]] = ()
    Params: ClassVar[type[BaseModel]] = NoParams

    def run(self, ctx: "ProbeContext") -> Finding:  # pragma: no cover - abstract
        raise NotImplementedError


class ProbeOutcome(BaseException):
    """Base of the control-flow outcomes a probe may raise."""


class Skipped(ProbeOutcome):
    def __init__(self, reason: str, evidence: dict[str, Any] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.evidence = evidence or {}


class Cancelled(ProbeOutcome):
    """The user cancelled the rung (TUI), it timed out, or the run was interrupted."""


# the cancel event of the rung running in this thread (set by the runner in each probe's worker thread)
running_rung = threading.local()
_forward_hook = None


def cancel_point() -> None:
    """Raise `Cancelled` in a probe's thread once its rung was cancelled or timed out."""
    event = getattr(running_rung, "cancel_event", None)
    if event is not None and event.is_set():
        raise Cancelled("cancelled")


def count_cost(what: str, amount: int = 1) -> None:
    """Add to the running rung's cost (`evidence.cost` in the report): model loads, forward passes, generate
    calls, tokens generated, HTTP requests. Outside a rung (no runner) it counts nothing."""
    cost = getattr(running_rung, "cost", None)
    if cost is not None:
        cost[what] = cost.get(what, 0) + amount


def step_progress(what: str, done: int, total: int, within_phase: bool = False) -> None:
    """Tell the running rung's progress display `what done/total` (`prompt 3/12`, `tensor 40/290`), from
    code that holds no ProbeContext (the harness loop, a weight scan). `within_phase`: the steps of what the
    rung last said it does (`running the model both ways: token 5/24`). Outside a rung it does nothing."""
    report = getattr(running_rung, "progress", None)
    if report is not None:
        phase = getattr(running_rung, "phase", None) if within_phase else None
        report(f"{phase + ': ' if phase else ''}{what} {done}/{total}", done / total if total else None)


def _forward_pre_hook(module, args) -> None:
    cancel_point()
    if type(module).__name__.endswith("ForCausalLM"):  # the whole model, not its inner modules
        count_cost("forward_passes")


def install_forward_cancel_point() -> None:
    """Make every torch module's forward pass a cancel point (once per process): a probe, or a harness it
    runs in-process, stops at its next forward pass after its rung timed out or was cancelled."""
    global _forward_hook
    if _forward_hook is None:
        import torch

        _forward_hook = torch.nn.modules.module.register_module_forward_pre_hook(_forward_pre_hook)


def skip(reason: str, **evidence: Any) -> None:
    """Stop the probe: it cannot measure with what the case gives. Say what would enable it."""
    raise Skipped(reason, evidence)


def passed(summary: str, **evidence: Any) -> Finding:
    return Finding(status=Status.PASS, summary=summary, evidence=evidence)


def failed(summary: str, **evidence: Any) -> Finding:
    return Finding(status=Status.FAIL, summary=summary, evidence=evidence)


def warned(summary: str, **evidence: Any) -> Finding:
    return Finding(status=Status.WARN, summary=summary, evidence=evidence)


ProgressCallback = Callable[[str, "float | None"], None]


@dataclass
class ProbeContext:
    """Everything a probe may use while it runs."""

    rung: Rung
    params: BaseModel
    case: "Case"
    resources: "Resources"
    findings: dict[str, Finding] = field(default_factory=dict)
    on_progress: ProgressCallback | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event)

    def progress(self, message: str, fraction: float | None = None) -> None:
        """Report progress of a long probe (shown by the CLI and the TUI)."""
        self.check_cancelled()
        running_rung.phase = message  # what `step_progress(..., within_phase=True)` counts steps of
        if self.on_progress is not None:
            self.on_progress(message, fraction)

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled("cancelled")

    def finding_of(self, rung_id: str) -> Finding | None:
        """The finding of a rung walked earlier in this run, if any."""
        return self.findings.get(rung_id)
