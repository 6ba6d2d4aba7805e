"""Benchmark the fixture factory: build times and peak memory (RSS) of each fixture.

Run from a checkout: `python bench/bench_fixtures.py [--cold] [--cases]`. With `--cold`
the builds go to a fresh temporary cache (`$LADDER_CACHE`), so the models are really
trained; otherwise the cache in use is measured (warm: reuse only). Each step runs in
its own process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

STEP_SCRIPT = """
import json, resource, sys, time
import torch
torch.set_num_threads(2)
started = time.perf_counter()
what, arg = sys.argv[1], sys.argv[2]
if what == "base":
    from ladder.fixtures.models import base_model_dir
    path = base_model_dir(arg)
elif what == "chat":
    from ladder.fixtures.models import chat_model_dir
    path = chat_model_dir(arg)
else:
    from ladder.fixtures.cases import build_case
    path = build_case(arg)
seconds = time.perf_counter() - started
print(json.dumps({"step": f"{what} {arg}", "seconds": round(seconds, 1),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "path": str(path)}))
"""


def run_step(what: str, arg: str, env: dict) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", STEP_SCRIPT, what, arg], env=env, capture_output=True, text=True,
                          cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{what} {arg} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="build into a fresh temporary cache")
    parser.add_argument("--cases", action="store_true", help="also build every fixture case")
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    if args.cold:
        env["LADDER_CACHE"] = tempfile.mkdtemp(prefix="ladder-bench-")
    steps = [("base", "chatml"), ("chat", "chatml"), ("chat", "gemma"), ("base", "gemma")]
    if args.cases:
        from ladder.fixtures.cases import CASE_NAMES

        steps += [("case", name) for name in CASE_NAMES]
    print(f"cache: {env.get('LADDER_CACHE') or 'platform default'}")
    print(f"{'step':34} {'build s':>8} {'process s':>10} {'peak RSS MB':>12}")
    for what, arg in steps:
        result = run_step(what, arg, env)
        print(f"{result['step']:34} {result['seconds']:8.1f} {result['process_seconds']:10.1f} "
              f"{result['peak_rss_mb']:12d}", flush=True)


if __name__ == "__main__":
    main()
