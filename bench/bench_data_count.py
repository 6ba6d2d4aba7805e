"""Benchmark of `data-count`'s reader: count (and validate) a 1 GB JSONL file.

Targets: at least 300 MB/s and a peak RSS under 150 MB. The file is generated into a
temporary folder and deleted afterwards. Each measurement runs in a fresh child process so
its peak RSS is its own; the file is read once first so every run reads from the page cache
(this measures the reader, not the disk).

    python bench/bench_data_count.py [--size-mb 1024]

Modes measured:
  lines            newlines counted in binary chunks: the floor, what "count only" costs
  structure        what the rung does above `full_parse_mb` (64 MB): every line checked on bytes
                   to be `{...}` in valid UTF-8, 64 lines per 4 MB chunk parsed as JSON; a chunk
                   failing any check is parsed line by line
  structure+field  the same, plus the text field's key counted once per line, never empty
  parse            every line parsed as JSON (orjson, a chunk per call) and checked to be an object
  parse+field      the same, plus the text field checked on every row
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from ladder.data.rows import DataFile, count_file, CHUNK_BYTES

path, mode = Path(sys.argv[1]), sys.argv[2]
start, cpu_start = time.perf_counter(), time.process_time()
if mode == "lines":
    rows = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            rows += chunk.count(b"\n")
    parseable = rows
else:
    field = "text" if mode.endswith("+field") else None
    count = count_file(DataFile(path, "jsonl"), field, full_parse=mode.startswith("parse"))
    rows, parseable = count.present, count.parseable
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rows": rows, "parseable": parseable, "seconds": seconds, "cpu": cpu, "peak_rss_mb": rss_mb}))
"""


def generate(path: Path, size_mb: int) -> int:
    """JSONL chat-like rows of ~300 bytes, written in 8 MB blocks until the size is reached."""
    rows = []
    for i in range(25000):
        rows.append(json.dumps({"id": i, "text": f"Question {i}: what is {i % 97} plus {i % 89}? " * 3,
                                "messages": [{"role": "user", "content": f"What is {i % 97} plus {i % 89}?"},
                                             {"role": "assistant", "content": str(i % 97 + i % 89)}]}))
    block = ("\n".join(rows) + "\n").encode()
    lines_per_block = len(rows)
    written = lines = 0
    with path.open("wb") as handle:
        while written < size_mb << 20:
            handle.write(block)
            written += len(block)
            lines += lines_per_block
    return lines


def measure(path: Path, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), mode], capture_output=True, text=True,
                          env=env, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ladder-bench-"))
    try:
        path = folder / "train.jsonl"
        lines = generate(path, args.size_mb)
        size = path.stat().st_size
        with path.open("rb") as handle:  # warm the page cache
            while handle.read(16 << 20):
                pass
        print(f"file: {size / 2**20:.0f} MiB, {lines} rows, CPUs: {os.cpu_count()}")
        print(f"load average before: {os.getloadavg()[0]:.1f} (other work shares these CPUs; MB/s per CPU "
              "second is the reader's own speed)")
        print(f"{'mode':16} {'seconds':>8} {'MB/s':>8} {'CPU s':>7} {'MB/CPU-s':>9} {'peak RSS MB':>12}  rows")
        for mode in ("lines", "structure", "structure+field", "parse", "parse+field"):
            result = measure(path, mode)
            assert result["rows"] == lines, (mode, result, lines)
            rate = size / 1e6 / result["seconds"]
            cpu_rate = size / 1e6 / max(result["cpu"], 1e-9)
            print(f"{mode:16} {result['seconds']:8.2f} {rate:8.0f} {result['cpu']:7.2f} {cpu_rate:9.0f} "
                  f"{result['peak_rss_mb']:12.0f}  {result['rows']}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
