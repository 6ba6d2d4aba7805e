"""The harness tap: run the user's own test code and record exactly what reached the model.

Rungs share one run of the harness per ladder run, cached in the run's resources
under "harness:calls" (`harness_run(ctx)`). Importing this package imports no torch.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from ladder.harness.run import HarnessRun, read_transcript, run_command, run_function
from ladder.probes.base import Probe

if TYPE_CHECKING:
    from ladder.case import Case
    from ladder.models import Finding
    from ladder.probes.base import ProbeContext
    from ladder.resources import Resources

__all__ = ["HarnessProbe", "HarnessRun", "harness_redirect", "harness_run", "harness_error_finding", "probe_prompts",
           "run_harness", "DEFAULT_PROMPTS", "DEFAULT_ANSWERS"]

# Used when the case gives no prompts of its own: short questions any instruction-following chat model
# answers, with the answer it gives (a regex searched in the reply, case-insensitive). A case adds its own
# with `prompts: [{prompt: ..., expect: REGEX}]` (see docs/verdicts.md).
DEFAULT_PROMPTS: tuple[tuple[str, str], ...] = (
    ("What is 2 plus 3?", r"(?i)\b5\b|\bfive\b"),
    ("What is the capital of France?", r"(?i)\bparis\b"),
    ("What is the opposite of hot?", r"(?i)\bcold\b"),
    ("How many legs does a dog have?", r"(?i)\b4\b|\bfour\b"),
    ("Say hello.", r"(?i)\b(hello|hi|hey|greetings)\b"),
    ("What is 10 minus 4?", r"(?i)\b6\b|\bsix\b"),
    ("What is 4 plus 4?", r"(?i)\b8\b|\beight\b"),
    ("How many days are in a week?", r"(?i)\b7\b|\bseven\b"),
    ("Add 3 and 8.", r"(?i)\b11\b|\beleven\b"),
    ("What color is the sky on a clear day?", r"(?i)\bblue\b"),
    ("How much is 6 plus 7?", r"(?i)\b13\b|\bthirteen\b"),
    ("What is the largest planet in the solar system?", r"(?i)\bjupiter\b"),
)
# A reference reply to each default prompt: text a rung can score the model on (its loss on a reply) when the
# case gives no data of its own.
DEFAULT_ANSWERS: dict[str, str] = {
    "What is 2 plus 3?": "5",
    "What is the capital of France?": "Paris",
    "What is the opposite of hot?": "Cold",
    "How many legs does a dog have?": "4",
    "Say hello.": "Hello!",
    "What is 10 minus 4?": "6",
    "What is 4 plus 4?": "8",
    "How many days are in a week?": "7",
    "Add 3 and 8.": "11",
    "What color is the sky on a clear day?": "Blue",
    "How much is 6 plus 7?": "13",
    "What is the largest planet in the solar system?": "Jupiter",
}


def probe_prompts(case: "Case") -> list[dict[str, Any]]:
    """The case's prompts ({prompt, expect}), else ladder's default ones with their expected answers."""
    if case.prompts:
        return [{"prompt": p.prompt, "expect": p.expect} for p in case.prompts]
    return [{"prompt": prompt, "expect": expect} for prompt, expect in DEFAULT_PROMPTS]


def run_harness(case: "Case", prompts: list[str], *, redirect: dict[str, str] | None = None,
                batch: bool = False, singles: bool = True, resources: "Resources | None" = None) -> HarnessRun:
    """Run the case's harness (function, command or transcript) on `prompts` under the tap (a function's
    batch entry point too with `batch`, only that with `singles=False`). Given the run's `resources`, an
    in-process harness that loads the case's model (or base) the way ladder did is handed ladder's loaded
    instance: one copy of the weights (`lent_models`)."""
    if case.harness:
        with lent_models(case, resources) as lenders:
            return run_function(case.harness, prompts, timeout=case.harness_timeout, redirect=redirect,
                                batch=batch, singles=singles, lenders=lenders)
    if case.harness_cmd:
        return run_command(case.harness_cmd, prompts, timeout=case.harness_timeout, redirect=redirect)
    if case.transcript:
        if redirect:
            raise ValueError("a transcript cannot be re-run with another model")
        return read_transcript(case.transcript)
    raise ValueError("the case has no harness")


@contextlib.contextmanager
def lent_models(case: "Case", resources: "Resources | None"):
    """ladder's loaded models by path, for the tap to lend; afterwards each goes back to eval mode, and one
    the harness changed (weights, dtype, device, config, generation config) is released, so ladder's next
    rung loads a fresh copy instead of measuring the harness's edits."""
    loaded = {}
    for which in ("model", "base"):
        hf = resources.peek(f"hf:{which}") if resources is not None else None
        if hf is not None and getattr(hf, "loaded_model", None) is not None and getattr(case, which):
            loaded[f"hf:{which}"] = hf
    before = {key: hf.lend_state() for key, hf in loaded.items()}
    try:
        with contextlib.ExitStack() as unsliced:
            for hf in loaded.values():
                unsliced.enter_context(hf.unsliced())
            yield {hf.path: hf for hf in loaded.values()}
    finally:
        for key, hf in loaded.items():
            if hf.loaded_model is None:
                continue
            hf.loaded_model.eval()
            if hf.lend_state() != before[key]:
                resources.release(key)


def harness_redirect(case: "Case", to: str | None = None) -> dict[str, str] | None:
    """What the harness's model loads are redirected to: the checkpoint it loads (`harness_model`, else
    `model`) to `to` (default: `model`); None when that is where it loads from anyway."""
    source, target = case.harness_model or case.model, to or case.model
    if not source or not target or source == target:
        return None
    return {source: target}


def harness_run(ctx: "ProbeContext") -> HarnessRun:
    """The run's shared recording of the harness on the probe prompts (built once per run)."""
    from ladder.probes.base import skip

    case = ctx.case
    if not (case.harness or case.harness_cmd or case.transcript):
        skip("needs --harness FILE.py:FUNC, --harness-cmd CMD or --transcript F.jsonl "
             "(case keys `harness`, `harness_cmd`, `transcript`)")

    def build() -> HarnessRun:
        ctx.progress("running your harness under the tap", None)
        prompts = [p["prompt"] for p in probe_prompts(case)]
        return run_harness(case, prompts, resources=ctx.resources, redirect=harness_redirect(case))

    return ctx.resources.get("harness:calls", build)


def harness_batch_call(ctx: "ProbeContext") -> dict[str, Any] | None:
    """The in-process harness's own batch entry point (`generate_batch`) called with the probe prompts under
    the tap (`HarnessRun.batch`: outputs and generate records, or its error); None when it has none. Made
    only when a rung asks (batch-consistency), once per run: a walk that stops above it never batches."""
    case = ctx.case
    if not case.harness:
        return None

    def build() -> dict[str, Any] | None:
        ctx.progress("calling your harness's generate_batch under the tap", None)
        prompts = [p["prompt"] for p in probe_prompts(case)]
        return run_harness(case, prompts, batch=True, singles=False, resources=ctx.resources,
                           redirect=harness_redirect(case)).batch

    return ctx.resources.get("harness:batch", build)


def harness_error_finding(run: HarnessRun, ctx: "ProbeContext | None" = None) -> "Finding | None":
    """An `error` finding carrying the harness's own traceback or stderr, when the harness failed. Given
    the probe's `ctx`, only the first rung to find the failure reports it; later ones are blocked by it."""
    from ladder.models import Finding, Status

    if run.error is None:
        return None
    if ctx is not None:
        on_base = bool(run.redirect) and ctx.case.base in run.redirect.values()
        ctx.resources.report_failure("harness:calls:base" if on_base else "harness:calls")
    error = run.error
    detail = error.get("traceback") or error.get("stderr") or ""
    evidence = {"harness_error": {k: v for k, v in error.items() if k not in ("traceback",)},
                "harness": run.spec, "form": run.form}
    return Finding(status=Status.ERROR, summary=f"your harness failed, not the model: {error['message']}",
                   evidence=evidence, traceback=detail or None)


class HarnessProbe(Probe):
    """A probe of what the user's harness did: the harness runs once per ladder run under the tap, and
    a harness that failed (import error, exception, timeout, non-zero exit) is the finding itself."""

    needs = ("model", "harness")
    capabilities = ("generate",)

    def run(self, ctx: "ProbeContext"):
        run = harness_run(ctx)
        if (problem := harness_error_finding(run, ctx)) is not None:
            return problem
        return self.check(ctx, run)

    def check(self, ctx: "ProbeContext", run: HarnessRun):
        """The finding on a harness run that completed."""
        raise NotImplementedError
