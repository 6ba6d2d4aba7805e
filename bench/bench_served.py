"""The founding case served vs in-process, through the real CLI (`ladder probe --json`, the default ladder).

    python bench/bench_served.py [--repeats 3] [--servers transformers,vllm]

Served: `transformers serve` and vLLM (CPU, from `.ci/vllm-venv`'s virtualenv; left out, saying so,
without it) on loopback serve the factory's chatml chat model; the harness posts the raw
question to /v1/completions (urllib), and the case gives `--endpoint` too, so served-format runs. In-process:
the same model behind a harness that calls `generate` on raw text. Prints, per setting, the culprit, the
median wall time, and for the served one the HTTP requests per rung (the harness's, recorded by the tap, and
served-format's own).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def probe(case: Path) -> tuple[dict, float]:
    report = case.parent / "report.json"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ladder", "probe", str(case), "--json", str(report)], capture_output=True,
                   text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(report.read_text()), time.perf_counter() - started


def requests_per_rung(report: dict) -> dict[str, int]:
    counts = {}
    for rung in report["rungs"]:
        evidence = rung.get("evidence") or {}
        if "requests" in evidence:
            counts[rung["id"]] = evidence["requests"]
        elif evidence.get("served"):
            counts[rung["id"]] = evidence.get("prompts", 0)  # one request per prompt the harness was run on
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--servers", default="transformers,vllm", help="comma-separated: transformers, vllm")
    args = parser.parse_args()

    import yaml

    from interface_models import chat_model_dir, variant_harness
    from served import serve, serve_vllm, vllm_python, write_http_harness

    model = chat_model_dir("chatml")
    root = Path(tempfile.mkdtemp(prefix="ladder-served-"))
    local = root / "in-process"
    spec = variant_harness(local, model, mode="raw", batch=False)
    (local / "case.yaml").write_text(yaml.safe_dump({"model": str(model), "harness": spec}))
    rows = {"in-process": measure(local / "case.yaml", args.repeats)}
    servers = {"transformers": serve, "vllm": serve_vllm}
    for name in args.servers.split(","):
        if name == "vllm" and vllm_python() is None:
            print("vllm: left out (no virtualenv: run .ci/vllm-venv)")
            continue
        with servers[name](model, root) as server:
            served = root / name
            spec = write_http_harness(served, server, "completions")
            (served / "case.yaml").write_text(yaml.safe_dump({"model": str(model), "harness": spec,
                                                               "endpoint": server.url,
                                                               "served_model": server.model}))
            rows[f"served ({name})"] = measure(served / "case.yaml", args.repeats)
    for name, (culprit, seconds, requests) in rows.items():
        ratio = f" ({seconds / rows['in-process'][1]:.2f}x in-process)" if name != "in-process" else ""
        print(f"{name:22} culprit {culprit!s:15} median {seconds:6.1f} s over {args.repeats}{ratio}"
              + (f"  HTTP requests per rung {requests}" if requests else ""))


def measure(case: Path, repeats: int) -> tuple[str | None, float, dict[str, int]]:
    """(culprit, median wall seconds, HTTP requests per rung) of `repeats` runs of the case."""
    runs = [probe(case) for _ in range(repeats)]
    report = runs[-1][0]
    return (report["culprit"]["rung"] if report.get("culprit") else None,
            statistics.median(seconds for _, seconds in runs), requests_per_rung(report))


if __name__ == "__main__":
    main()
