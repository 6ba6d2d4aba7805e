"""The runner: walks a ladder's order against a case and emits events.

By default the walk stops at the first `fail`: the rungs that come after it
(through `after`, directly or not) are `blocked`, the others `not-run`. With
`keep_going`, every rung that is not blocked runs. A probe that raises is an
`error` with its traceback, and the walk goes on. Each probe runs in a worker
thread so a per-rung timeout and Ctrl-C can stop waiting for it.

Shared resources survive faults: a rung that times out is cancelled at its next
forward pass (or progress call) and given `CANCEL_GRACE_S` to stop; after every
rung the shared models' fingerprints (dtype, device, mode, attention, a few
weights) are compared with those before it, and a probe that left them changed,
or one that would not stop, is an `error` and the resources are loaded afresh. A
resource that failed to load is reported once, by the first rung that needed it;
later rungs that need it are `blocked` by that rung.
"""

from __future__ import annotations

import platform
import threading
import time
import traceback
from importlib import metadata
from typing import Callable

from pydantic import ValidationError

import ladder
from ladder.backends import MissingCapability, UndeclaredCapability, missing_capabilities, reached_backends
from ladder.case import Case, describe_case, missing_input
from ladder.events import Event, RunFinished, RungFinished, RungProgress, RungStarted, RunStarted
from ladder.graph import ancestors
from ladder.loader import Ladder
from ladder.models import Culprit, Finding, Report, Rung, RungResult, Status
from ladder.probes.base import Cancelled, ProbeContext, Skipped, running_rung
from ladder.registry import BrokenProbe, ProbeRegistry, UnknownProbe
from ladder.resources import ResourceFailed, Resources, ResourceUnavailable, describe_resource

# how long a cancelled or timed-out probe is given to stop before it is abandoned (its resources rebuilt)
CANCEL_GRACE_S = 10.0

VERSIONED_PACKAGES = ("torch", "transformers", "tokenizers", "pydantic", "networkx", "textual")


def versions() -> dict[str, str]:
    """Versions of ladder, Python and the packages that shape results (read from metadata: no imports)."""
    found = {"ladder": ladder.__version__, "python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


class Runner:
    def __init__(self, ladder_: Ladder, case: Case, *, registry: ProbeRegistry | None = None,
                 keep_going: bool = False, rung_timeout: float | None = None,
                 on_event: Callable[[Event], None] | None = None):
        self.ladder = ladder_
        self.case = case
        self.registry = registry or ProbeRegistry()
        self.keep_going = keep_going
        self.rung_timeout = rung_timeout
        self.on_event = on_event or (lambda event: None)
        self.resources = Resources(case)
        self.results: dict[str, RungResult] = {}
        self.walked: list[str] = []  # rung ids in the order they were walked
        self.interrupted = False
        self._ancestors = {r.id: ancestors(ladder_.rungs, r.id) for r in ladder_.rungs}

    # ---- walking ------------------------------------------------------------------------

    def run(self) -> Report:
        """Walk the whole ladder and return the report; resources are released at the end."""
        self.on_event(RunStarted(list(self.ladder.order)))
        try:
            self.walk(self.ladder.order, stop_at_fail=not self.keep_going, record_unwalked=True)
        except KeyboardInterrupt:
            self.interrupted = True
            for rung in self.ladder.ordered():
                if rung.id not in self.results:
                    self._record(rung, Status.NOT_RUN, "not run: interrupted", {})
        finally:
            self.resources.close()
        report = self.report()
        self.on_event(RunFinished(report))
        return report

    def walk(self, rung_ids: list[str], *, stop_at_fail: bool = True, record_unwalked: bool = False,
             cancel_event: threading.Event | None = None) -> None:
        """Run `rung_ids` in walk order, the one walk of both faces (`run` for the CLI, the TUI's n/a/r):
        a rung that comes after a failed one is blocked, not run; with `stop_at_fail` the walk ends at the
        first new failure. `record_unwalked` records blocked and not-run results for the rungs it passes
        over (a full run reports every rung); a cancelled walk stops before its next rung."""
        wanted = set(rung_ids)
        stopped_by: str | None = None
        for position, rung in enumerate(self.ladder.ordered(), start=1):
            if rung.id not in wanted:
                continue
            if cancel_event is not None and cancel_event.is_set():
                return
            if self.blocker_of(rung.id) or stopped_by:
                if record_unwalked:
                    self._remember(self.unwalked_result(rung.id, stopped_by))
                continue
            result = self.run_rung(rung.id, position=position, cancel_event=cancel_event)
            if result.status is Status.FAIL and stop_at_fail:
                stopped_by = rung.id
                if not record_unwalked:
                    return

    def blocker_of(self, rung_id: str, results: dict[str, RungResult] | None = None) -> str | None:
        """The first failed rung (in walk order) that `rung_id` comes after, if any (in `results`, by
        default the runner's own)."""
        results = self.results if results is None else results
        for before in self.ladder.order:
            if before in self._ancestors[rung_id] and before in results and results[before].status is Status.FAIL:
                return before
        return None

    def state_of(self, rung_id: str, results: dict[str, RungResult] | None = None) -> Status:
        """A rung's status: its result, else blocked by a failed rung above it, else not run."""
        results = self.results if results is None else results
        if rung_id in results:
            return results[rung_id].status
        return Status.BLOCKED if self.blocker_of(rung_id, results) else Status.NOT_RUN

    def remaining(self, results: dict[str, RungResult] | None = None) -> list[str]:
        """Rungs without a verdict yet (never run, or cancelled), in walk order."""
        results = self.results if results is None else results
        return [r for r in self.ladder.order if r not in results or results[r].status is Status.NOT_RUN]

    def rerun_from(self, rung_id: str) -> list[str]:
        """"I fixed it": forget the results of `rung_id` and every rung below it and load the resources
        afresh; returns the rungs reset."""
        below = self.ladder.order[self.ladder.order.index(rung_id):]
        self.reset(below)
        self.restart_resources()
        return below

    def run_rung(self, rung_id: str, *, position: int | None = None,
                 cancel_event: threading.Event | None = None) -> RungResult:
        """Run one rung now (the TUI calls this directly) and record its result."""
        rung = self.ladder.rung(rung_id)
        if position is None:
            position = self.ladder.order.index(rung_id) + 1
        self.on_event(RungStarted(rung, position, len(self.ladder.order)))
        started = time.perf_counter()
        finding = self._execute(rung, cancel_event or threading.Event())
        self.resources.return_freed_memory()
        return self._record(rung, finding.status, finding.summary, finding.evidence,
                            seconds=time.perf_counter() - started, traceback_text=finding.traceback)

    def reset(self, rung_ids: list[str] | set[str]) -> None:
        """Forget results (the TUI's "I fixed it")."""
        for rung_id in rung_ids:
            self.results.pop(rung_id, None)
            if rung_id in self.walked:
                self.walked.remove(rung_id)

    def skip_rung(self, rung_id: str, reason: str) -> RungResult:
        """Record a skip the user chose (the TUI's `s`), with their reason."""
        return self._record(self.ladder.rung(rung_id), Status.SKIP, f"skipped by the user: {reason}",
                            {"skipped_by": "user", "reason": reason})

    def restart_resources(self) -> None:
        """Release the run's resources so the next rung loads the model, harness and data afresh
        (after the user fixed something on disk)."""
        self.resources.close()
        self.resources = Resources(self.case)

    def unwalked_result(self, rung_id: str, stopped_by: str | None = None) -> RungResult:
        """What a walk says of a rung it did not run: blocked by a failed rung it comes after,
        else not run (because the walk stopped at `stopped_by`)."""
        rung = self.ladder.rung(rung_id)
        blocker = self.blocker_of(rung_id)
        if blocker:
            return self._result(rung, Status.BLOCKED, f"blocked: {blocker!r} failed; fix it first", {})
        reason = f"not run: the walk stopped at {stopped_by!r}" if stopped_by else "not run"
        return self._result(rung, Status.NOT_RUN, reason, {})

    def _result(self, rung: Rung, status: Status, summary: str, evidence: dict, *, seconds: float = 0.0,
                traceback_text: str | None = None) -> RungResult:
        return RungResult(id=rung.id, tier=rung.tier, title=rung.title, status=status, summary=summary,
                          evidence=evidence, seconds=round(seconds, 3),
                          fix=rung.fix.strip() if status is Status.FAIL else None,
                          traceback=traceback_text)

    def _record(self, rung: Rung, status: Status, summary: str, evidence: dict, *, seconds: float = 0.0,
                traceback_text: str | None = None) -> RungResult:
        return self._remember(self._result(rung, status, summary, evidence, seconds=seconds,
                                           traceback_text=traceback_text))

    def _remember(self, result: RungResult) -> RungResult:
        self.results[result.id] = result
        if result.id in self.walked:
            self.walked.remove(result.id)
        self.walked.append(result.id)
        self.on_event(RungFinished(self.ladder.rung(result.id), result))
        return result

    # ---- one probe ----------------------------------------------------------------------

    def _execute(self, rung: Rung, cancel_event: threading.Event) -> Finding:
        try:
            probe_class = self.registry.get(rung.probe)
        except (UnknownProbe, BrokenProbe) as exc:
            return Finding(status=Status.ERROR, summary=str(exc))
        try:
            params = probe_class.Params.model_validate(rung.params)
        except ValidationError as exc:
            return Finding(status=Status.ERROR, summary=f"bad params for probe {rung.probe!r}: {exc}")
        for need in probe_class.needs:
            hint = missing_input(self.case, need)
            if hint:
                return Finding(status=Status.SKIP, summary=f"needs {hint}",
                               evidence={"missing_input": need})
        reached = reached_backends(self.case)
        lacking = missing_capabilities(reached, probe_class.capabilities)
        if lacking:
            missing, sentence = lacking
            return Finding(status=Status.SKIP, summary=sentence,
                           evidence={"missing_capabilities": missing, "backends": sorted(reached)})

        def progress(message: str, fraction: float | None) -> None:
            self.on_event(RungProgress(rung, message, fraction))

        context = ProbeContext(rung=rung, params=params, case=self.case, resources=self.resources,
                               findings={k: Finding(status=v.status, summary=v.summary, evidence=v.evidence)
                                         for k, v in self.results.items()},
                               on_progress=progress, cancel_event=cancel_event)
        outcome: dict[str, Finding] = {}
        cost: dict[str, int] = {}

        def target() -> None:
            running_rung.cancel_event = cancel_event
            running_rung.cost = cost
            running_rung.progress = progress
            running_rung.phase = None
            running_rung.probe = f"probe {probe_class.name!r}"
            running_rung.capabilities = frozenset(probe_class.capabilities) | frozenset(
                getattr(probe_class, "optional_capabilities", ()))
            outcome["finding"] = _run_probe(probe_class, context)

        self.resources.current_rung = rung.id
        before = self._fingerprints()
        worker = threading.Thread(target=target, name=f"probe:{rung.id}", daemon=True)
        worker.start()
        deadline = None if self.rung_timeout is None else time.monotonic() + self.rung_timeout
        try:
            while worker.is_alive():
                worker.join(0.1)
                if cancel_event.is_set() and worker.is_alive():
                    self._stop(worker, before)
                    return Finding(status=Status.NOT_RUN, summary="cancelled")
                if deadline is not None and time.monotonic() > deadline and worker.is_alive():
                    cancel_event.set()
                    stopped = self._stop(worker, before)
                    return Finding(status=Status.ERROR,
                                   summary=f"timed out after {self.rung_timeout:g} s (--rung-timeout); {stopped}")
        except KeyboardInterrupt:
            cancel_event.set()
            raise
        finally:
            self.resources.current_rung = None
        finding = outcome["finding"]
        if cost and isinstance(finding.evidence, dict):
            finding.evidence.setdefault("cost", dict(cost))
        changed = self._reload_if_changed(before)
        if changed:
            return Finding(status=Status.ERROR,
                           summary=f"the probe left the shared model changed ({changed}); its finding is not "
                                   "trusted and the model is loaded afresh for the next rungs",
                           evidence={"changed": changed, "finding_discarded": finding.summary})
        return finding

    def _fingerprints(self) -> dict[str, dict]:
        """Fingerprints of the shared resources that have one (the loaded models)."""
        found = {}
        for key, value in self.resources.built():
            fingerprint = getattr(value, "fingerprint", None)
            if callable(fingerprint):
                try:
                    found[key] = fingerprint()
                except Exception as exc:  # a model a probe broke: compare as changed
                    found[key] = {"unreadable": f"{type(exc).__name__}: {exc}"}
        return found

    def _stop(self, worker: threading.Thread, before: dict[str, dict]) -> str:
        """Wait up to CANCEL_GRACE_S for a cancelled probe; rebuild the resources if it would not stop or
        left them changed. Says what happened, in words."""
        worker.join(CANCEL_GRACE_S)
        if worker.is_alive():
            self.restart_resources()
            return (f"it did not stop within {CANCEL_GRACE_S:g} s and was abandoned; the model is loaded afresh "
                    "for the next rungs")
        changed = self._reload_if_changed(before)
        if changed:
            return f"it stopped, leaving the shared model changed ({changed}); the model is loaded afresh"
        return "it stopped; the shared model is as it was"

    def _reload_if_changed(self, before: dict[str, dict]) -> str:
        """What a rung changed in the shared models, in words ('' if nothing); when it changed anything, the
        resources are released so that the next rung loads them afresh."""
        changed = _changes(before, self._fingerprints())
        if changed:
            self.restart_resources()
        return changed

    # ---- the answer -----------------------------------------------------------------------

    def report(self, *, include_unwalked: bool = False) -> Report:
        """The report of what was walked; with `include_unwalked`, the rungs not walked yet follow
        in walk order, as a walk that stopped at the first culprit would report them."""
        rungs = [self.results[rung_id] for rung_id in self.walked]
        if include_unwalked:
            stopped_by = next((r.id for r in rungs if r.status is Status.FAIL), None)
            rungs += [self.unwalked_result(rung_id, stopped_by) for rung_id in self.ladder.order
                      if rung_id not in self.results]
        culprit = next((r for r in rungs if r.status is Status.FAIL), None)
        return Report(
            culprit=Culprit(rung=culprit.id, summary=culprit.summary, fix=culprit.fix) if culprit else None,
            rungs=rungs,
            case=describe_case(self.case),
            versions=versions(),
            ladder=self.ladder.name,
            complete=not self.interrupted and all(r.status is not Status.ERROR for r in rungs),
            interrupted=self.interrupted,
        )


def _changes(before: dict[str, dict], after: dict[str, dict]) -> str:
    """What differs between two sets of fingerprints, in words ('' when nothing does)."""
    changes = []
    for key, old in before.items():
        new = after.get(key)
        if new is None:
            continue  # released, not changed
        for field_name in old:
            if old[field_name] != new.get(field_name):
                what = "weights" if field_name == "weights" else f"{field_name} {old[field_name]} -> {new.get(field_name)}"
                changes.append(f"{describe_resource(key)}: {what}")
    return "; ".join(changes)


def _run_probe(probe_class, context: ProbeContext) -> Finding:
    try:
        finding = probe_class().run(context)
    except Skipped as outcome:
        return Finding(status=Status.SKIP, summary=outcome.reason, evidence=outcome.evidence)
    except Cancelled:
        return Finding(status=Status.NOT_RUN, summary="cancelled")
    except MissingCapability as exc:  # a capability the backend turned out to lack (a server's, discovered)
        return Finding(status=Status.SKIP, summary=f"needs the `{exc.capability}` capability, which the "
                                                   f"{exc.backend} backend does not offer here",
                       evidence={"missing_capabilities": [exc.capability], "backends": [exc.backend]})
    except UndeclaredCapability as exc:
        return Finding(status=Status.ERROR, summary=str(exc), traceback=traceback.format_exc())
    except ResourceUnavailable as exc:
        return Finding(status=Status.BLOCKED, summary=f"blocked: {exc}",
                       evidence={"unavailable": exc.key, "blocked_by": exc.rung})
    except ResourceFailed as exc:
        return Finding(status=Status.ERROR, summary=str(exc), evidence={"resource": exc.key},
                       traceback="".join(traceback.format_exception(exc.cause)))
    except Exception as exc:
        return Finding(status=Status.ERROR, summary=f"probe crashed: {type(exc).__name__}: {exc}",
                       traceback=traceback.format_exc())
    if not isinstance(finding, Finding):
        return Finding(status=Status.ERROR,
                       summary=f"probe {context.rung.probe!r} returned {type(finding).__name__}, not a Finding")
    if finding.status in (Status.BLOCKED, Status.NOT_RUN):
        return Finding(status=Status.ERROR,
                       summary=f"probe {context.rung.probe!r} returned {finding.status.value!r}, "
                               "which only the runner may give")
    return finding


def exit_status(report: Report) -> int:
    """0 no culprit, 1 a culprit, 3 an error left the answer incomplete, 130 interrupted."""
    if report.interrupted:
        return 130
    if report.culprit is not None:
        return 1
    if any(r.status is Status.ERROR for r in report.rungs):
        return 3
    return 0
