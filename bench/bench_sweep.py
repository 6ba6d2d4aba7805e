"""Benchmark: `ladder sweep` over checkpoints of the fixture chat model, sequential vs local parallel vs Ray.

Builds the healthy fixture case and N copies of its model as checkpoint folders (the same weights: every
run does the same work), then times `ladder sweep` with `--jobs 1`, `--jobs CORES` and `--ray local`
(when Ray is installed) and prints the wall times and the speedups over the sequential sweep.

    python bench/bench_sweep.py [--checkpoints 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=int, default=8)
    args = parser.parse_args()

    from ladder.fixtures.cases import build_case

    work = Path(tempfile.mkdtemp(prefix="ladder-bench-sweep-"))
    try:
        case = build_case("healthy", dest=work / "case")
        for step in range(1, args.checkpoints + 1):
            shutil.copytree(case / "model", work / "run" / f"checkpoint-{step * 100}")
        cores = os.cpu_count() or 1
        modes = [("sequential", ["--jobs", "1"]), (f"parallel ({cores} jobs)", ["--jobs", str(cores)])]
        try:
            import ray  # noqa: F401

            modes.append(("ray local", ["--ray", "local"]))
        except ImportError:
            print("ray not installed: pip install 'ladder-debug[ray]' to time it")
        print(f"{args.checkpoints} checkpoints of the fixture chat model, the whole default ladder each, "
              f"{cores} cores")
        first = None
        for label, extra in modes:
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "ladder", "sweep", str(case / "case.yaml"), "--models",
                                   str(work / "run" / "checkpoint-*"), *extra], capture_output=True, text=True)
            wall = time.perf_counter() - started
            first = first or wall
            print(f"  {label:<22} {wall:7.1f} s  speedup {first / wall:.2f} x  (exit {done.returncode})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
