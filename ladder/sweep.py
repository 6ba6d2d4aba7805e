"""`ladder sweep`: the ladder once per checkpoint of a run or a sweep, and one matrix of the verdicts.

Every checkpoint gets the same case (harness, base, data, config) with the model swapped: `ladder probe
CASE --model CHECKPOINT --keep-going` in a process of its own, and the harness's loads of the case's model
redirected to the checkpoint (`--harness-model`), so the harness tests each checkpoint without an edit.
Checkpoints run in parallel, at most `--jobs` at a time (default: one per GPU, each on a GPU of its own,
else one per core), each with its share of the CPU threads. The matrix has a row per checkpoint (in natural order:
checkpoint-900 before checkpoint-1000), a column per rung, the verdict in each cell, and for every rung
the first checkpoint where it turns from pass to fail. Schema `ladder.sweep/1` (docs/sweep.md).
"""

from __future__ import annotations

import glob
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ladder.errors import InputError

SCHEMA = "ladder.sweep/1"


def natural_key(path: str) -> list:
    """Sort key that orders numbers by value: checkpoint-900 before checkpoint-1000."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def expand_models(patterns: list[str]) -> list[str]:
    """The checkpoint folders the patterns name (globs or paths), each once, in natural order."""
    found: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern)), key=natural_key) if glob.has_magic(pattern) \
            else [os.path.expanduser(pattern)]
        if not matches:
            raise InputError.single(f"--models {pattern!r} matches no folder")
        for match in matches:
            if not os.path.isdir(match):
                raise InputError.single(f"--models: {match} is not a folder (a checkpoint is a model folder)")
            resolved = os.path.realpath(match)
            if resolved not in found:
                found.append(resolved)
    return sorted(found, key=natural_key)


@dataclass
class SweepRow:
    model: str
    exit_code: int | None = None
    seconds: float = 0.0
    report: dict[str, Any] | None = None
    error: str | None = None
    ran_on: str = "here"  # or "ray node ID"

    @property
    def verdicts(self) -> dict[str, str]:
        return {r["id"]: r["status"] for r in (self.report or {}).get("rungs", [])}

    @property
    def culprit(self) -> str | None:
        return ((self.report or {}).get("culprit") or {}).get("rung")


@dataclass
class Sweep:
    case: str | None
    models: list[str]
    rows: list[SweepRow] = field(default_factory=list)
    interrupted: bool = False

    def rung_ids(self) -> list[str]:
        for row in self.rows:
            if row.report:
                return [r["id"] for r in row.report["rungs"]]
        return []

    def turns(self) -> dict[str, dict[str, str]]:
        """Per rung, the first checkpoint where it fails after an earlier one passed (and that one)."""
        out = {}
        ordered = sorted(self.rows, key=lambda r: natural_key(r.model))
        for rung in self.rung_ids():
            last_pass = None
            for row in ordered:
                status = row.verdicts.get(rung)
                if status == "pass":
                    last_pass = row.model
                elif status == "fail" and last_pass is not None:
                    out[rung] = {"passed": last_pass, "failed": row.model}
                    break
        return out

    def to_json_dict(self) -> dict[str, Any]:
        rows = sorted(self.rows, key=lambda r: natural_key(r.model))
        return {"schema": SCHEMA, "case": self.case, "interrupted": self.interrupted, "rungs": self.rung_ids(),
                "rows": [{"model": r.model, "exit": r.exit_code, "seconds": round(r.seconds, 1), "culprit": r.culprit,
                          "verdicts": r.verdicts, "error": r.error, "ran_on": r.ran_on, "report": r.report}
                         for r in rows],
                "turns": self.turns()}


# the probe processes running here (a local sweep), so that Ctrl-C can stop them
_running: set[subprocess.Popen] = set()
_running_lock = threading.Lock()


def probe_checkpoint(case_file: str | None, overrides: list[str], model: str, harness_model: str | None,
                     threads: int, gpu: str | None = None) -> SweepRow:
    """`ladder probe` on one checkpoint in a process of its own; the row with its report. The same function
    runs here (a local sweep) and as a Ray task on a cluster's worker."""
    row = SweepRow(model=model)
    with tempfile.TemporaryDirectory(prefix="ladder-sweep-") as work:
        report = Path(work) / "report.json"
        command = [sys.executable, "-m", "ladder", "probe", *([case_file] if case_file else []), *overrides,
                   "--model", model, "--keep-going", "--json", str(report)]
        if harness_model:
            command += ["--harness-model", harness_model]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        with _running_lock:
            _running.add(process)
        try:
            _, stderr = process.communicate()
        finally:
            with _running_lock:
                _running.discard(process)
        row.exit_code, row.seconds = process.returncode, time.perf_counter() - started
        if report.exists():
            row.report = json.loads(report.read_text(encoding="utf-8"))
    if row.exit_code not in (0, 1) or row.report is None:
        row.error = (stderr.strip().splitlines() or [f"exit {row.exit_code}"])[-1]
    return row


def visible_gpus() -> list[str]:
    """The CUDA devices this process sees, as ids for CUDA_VISIBLE_DEVICES ([] without torch or CUDA)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return []
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(count)]
    return ids[:count]


def _stop_running() -> None:
    with _running_lock:
        for process in list(_running):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass


def run_sweep(case_file: str | None, models: list[str], *, overrides: list[str], jobs: int | None = None,
              on_row: Callable[[SweepRow, int, int], None] | None = None, harness_model: str | None = None,
              ray_address: str | None = None, gpus_per_run: float = 0, gpus: list[str] | None = None) -> Sweep:
    """Run `ladder probe` once per checkpoint and gather the matrix: here, at most `jobs` at a time (default:
    one per GPU, each run on a GPU of its own, else one per core), or as Ray tasks on the cluster at
    `ray_address` ("auto": the running one; "local": start one here). `gpus`: the GPU ids to use (default:
    the visible ones)."""
    sweep = Sweep(case=case_file, models=models)
    if ray_address:
        return _on_ray(sweep, case_file, models, overrides, harness_model, ray_address, gpus_per_run, on_row)
    gpus = visible_gpus() if gpus is None else gpus
    jobs = max(1, min(jobs or (len(gpus) if gpus else os.cpu_count() or 1), len(models)))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    free = queue.Queue()
    for gpu in (gpus or []):
        free.put(gpu)

    def on_a_gpu(model: str) -> SweepRow:
        """One checkpoint on a GPU of its own (CUDA_VISIBLE_DEVICES) when there are GPUs, else on the CPU."""
        gpu = free.get() if gpus else None
        try:
            return probe_checkpoint(case_file, overrides, model, harness_model, threads, gpu)
        finally:
            if gpu is not None:
                free.put(gpu)

    pool = ThreadPoolExecutor(max_workers=jobs)
    futures = []
    try:
        futures = [pool.submit(on_a_gpu, model) for model in models]
        for done, future in enumerate(as_completed(futures), start=1):
            sweep.rows.append(future.result())
            if on_row is not None:
                on_row(sweep.rows[-1], done, len(models))
    except KeyboardInterrupt:
        sweep.interrupted = True
        for future in futures:
            future.cancel()
        _stop_running()
        pool.shutdown(wait=True, cancel_futures=True)
        finished = {id(row) for row in sweep.rows}
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is None:
                if id(future.result()) not in finished:
                    sweep.rows.append(future.result())
    finally:
        pool.shutdown(wait=True)
    return sweep


def _probe_as_ray_task(*args) -> SweepRow:
    import ray

    row = probe_checkpoint(*args)
    row.ran_on = f"ray node {ray.get_runtime_context().get_node_id()[:12]}"
    return row


def _on_ray(sweep, case_file, models, overrides, harness_model, address, gpus_per_run, on_row) -> Sweep:
    """Each checkpoint a Ray task (one CPU, `gpus_per_run` GPUs), rows streamed back as they finish; a failed
    task is its row's error; Ctrl-C cancels the tasks. The case's files must be visible to the workers."""
    try:
        import ray
    except ImportError:
        raise InputError.single("--ray needs Ray: pip install 'ladder-debug[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    task = ray.remote(num_cpus=1, num_gpus=gpus_per_run)(_probe_as_ray_task)
    pending = {task.remote(case_file, overrides, model, harness_model, 1): model for model in models}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            model = pending.pop(done[0])
            try:
                row = ray.get(done[0])
            except Exception as exc:  # the task itself failed (a lost worker, an import error there)
                row = SweepRow(model=model, error=f"the Ray task failed: {type(exc).__name__}: {exc}")
            sweep.rows.append(row)
            if on_row is not None:
                on_row(row, len(sweep.rows), len(models))
    except KeyboardInterrupt:
        sweep.interrupted = True
        for ref in pending:
            ray.cancel(ref, force=True)
    finally:
        if started_here:
            ray.shutdown()
    return sweep


SYMBOLS = {"pass": "✔", "fail": "✘", "warn": "!", "skip": "-", "error": "E", "blocked": "·", "not-run": " "}


def markdown(sweep: Sweep) -> str:
    """The matrix as a Markdown table, with the turns under it."""
    rungs = sweep.rung_ids()
    lines = [f"# ladder sweep: {len(sweep.rows)} checkpoints", "",
             "| checkpoint | culprit | " + " | ".join(rungs) + " |", "|---|---|" + "---|" * len(rungs)]
    for row in sorted(sweep.rows, key=lambda r: natural_key(r.model)):
        cells = [row.verdicts.get(rung, "") for rung in rungs]
        culprit = row.culprit or (f"error: {row.error}" if row.error else "none")
        lines.append(f"| {Path(row.model).name} | {culprit} | " + " | ".join(cells) + " |")
    turns = sweep.turns()
    if turns:
        lines += ["", "First checkpoint where a rung turns from pass to fail:", ""]
        lines += [f"- `{rung}`: {Path(t['failed']).name} (passed at {Path(t['passed']).name})"
                  for rung, t in turns.items()]
    return "\n".join(lines) + "\n"


def print_table(sweep: Sweep, console) -> None:
    from rich.table import Table
    from rich.text import Text

    rungs = sweep.rung_ids()
    table = Table(title=f"ladder sweep ({len(sweep.rows)} checkpoints)")
    table.add_column("checkpoint")
    for rung in rungs:
        table.add_column(rung, justify="center")
    table.add_column("culprit")
    for row in sorted(sweep.rows, key=lambda r: natural_key(r.model)):
        cells = [SYMBOLS.get(row.verdicts.get(rung, ""), "") for rung in rungs]
        culprit = row.culprit or (f"error: {row.error}" if row.error else "none")
        table.add_row(*(Text(cell) for cell in (Path(row.model).name, *cells, culprit)))  # no markup: [INST]
    console.print(table)
    for rung, turn in sweep.turns().items():
        console.print(f"{rung}: fails from {Path(turn['failed']).name} (passed at {Path(turn['passed']).name})",
                      markup=False)
