"""Benchmark: start-up of the light commands, and a run whose rungs need no model.

Prints wall times (median of repeated runs, after one warm-up that writes the bytecode cache)
of `ladder --help` and `ladder rules` (target: under 0.3 s, no torch import), then the wall time and peak memory of
`ladder probe` on a case with training data, a run folder and a config but no model,
so only the data and config rungs run and the model rungs skip.

    python bench/bench_cli.py [--repeat 7] [--rows 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


# As on a user's machine: bytecode cached after the first run (some sandboxes set PYTHONDONTWRITEBYTECODE,
# which makes every start compile every module again).
USER_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(args: list[str], repeat: int) -> float:
    subprocess.run([sys.executable, "-m", "ladder", *args], check=False, capture_output=True, env=USER_ENV)  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ladder", *args], check=False, capture_output=True, env=USER_ENV)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def model_free_case(folder: Path, rows: int) -> Path:
    data = folder / "train.jsonl"
    with data.open("w") as out:
        for i in range(rows):
            out.write(json.dumps({"text": f"sample {i}: what is {i % 97} plus {i % 89}?"}) + "\n")
    run = folder / "run"
    run.mkdir()
    steps = rows // 64
    history = [{"step": s, "loss": 2.0 / (1 + s / 50), "learning_rate": 2e-4} for s in range(10, steps, 10)]
    (run / "trainer_state.json").write_text(json.dumps({
        "global_step": steps, "train_batch_size": 64, "num_train_epochs": 1, "max_steps": steps,
        "log_history": history}))
    (folder / "train_config.yaml").write_text("learning_rate: 2.0e-4\nnum_train_epochs: 1\n")
    case = folder / "ladder.case.yaml"
    case.write_text(f"data: train.jsonl\nexpect_samples: {rows}\nrun_dir: run\ntrain_config: train_config.yaml\n")
    return case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    print(f"ladder --help        {timed(['--help'], args.repeat):.3f} s (median of {args.repeat})")
    print(f"ladder rules         {timed(['rules'], args.repeat):.3f} s (median of {args.repeat})")
    print(f"ladder validate      {timed(['validate'], args.repeat):.3f} s (median of {args.repeat})")
    with tempfile.TemporaryDirectory() as tmp:
        case = model_free_case(Path(tmp), args.rows)
        size = (Path(tmp) / "train.jsonl").stat().st_size / 1e6
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "ladder", "probe", str(case), "--keep-going",
                               "--json", str(Path(tmp) / "r.json")], capture_output=True, text=True,
                              env={**USER_ENV, "HF_HUB_OFFLINE": "1"})
        wall = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        report = json.loads((Path(tmp) / "r.json").read_text())
        ran = [f"{r['id']}={r['status']}" for r in report["rungs"] if r["status"] not in ("skip", "not-run")]
        print(f"model-free probe run {wall:.3f} s wall, peak RSS {peak_mb:.0f} MB, exit {proc.returncode}, "
              f"{args.rows} rows ({size:.0f} MB); rungs that ran: {', '.join(ran) or 'none'}")


if __name__ == "__main__":
    main()
