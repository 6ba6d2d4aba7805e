"""Benchmark: ladder on real-size models against the script a careful engineer writes by hand.

Builds, on the spot, function-preserving big variants of the fixture chat model: each MLP widened with units
whose output weights are zero (so every forward pass costs what a model of that size costs, and the replies
are the small model's), for the founding case and the fixed (healthy) case. Then, each in a fresh process:

- `script`: import, the case's harness on the case's prompts, the model loaded once more, the same prompts
  through the chat template (what a person does by hand to check prompt-format);
- `ladder probe` on the founding case (stops at its culprit), and `--keep-going` on both cases.

Prints wall time as a ratio to the script, peak RSS as a ratio to the model's size in memory, and per rung
the model loads, forward passes and generate calls from the JSON report's `evidence.cost`.
Targets (issue 16): founding case ratio <= 1.0, `--keep-going` <= 3.0, peak RSS <= 1.3 x the model (plus the
base where a rung holds both).

    python bench/bench_scale.py [--params 400e6 1e9] [--device cpu|cuda] [--shape mlp|real] [--repeat 1]

`--shape mlp` (the default, issue 16's) widens only the MLPs of the fixture's 4 layers of width 128: per token
its activations are about 30 x a real model's relative to the weights, so batched prefill overstates peak RSS.
`--shape real` grows the model in a real checkpoint's proportions instead (`deepen`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

MEASURE = ("import resource, subprocess, sys, time\n"
           "start = time.perf_counter()\n"
           "code = subprocess.run(sys.argv[1:]).returncode\n"
           "print('MEASURED', code, time.perf_counter() - start, "
           "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n")

SCRIPT = '''
import sys, torch
sys.path.insert(0, {folder!r})
import harness
from transformers import AutoModelForCausalLM, AutoTokenizer
prompts = {prompts!r}
replies = [harness.generate(p) for p in prompts]
tokenizer = AutoTokenizer.from_pretrained({model!r})
model = AutoModelForCausalLM.from_pretrained({model!r}).to({device!r}).eval()
for p in prompts:
    enc = tokenizer.apply_chat_template([{{"role": "user", "content": p}}], add_generation_prompt=True,
                                        return_dict=True, return_tensors="pt").to({device!r})
    with torch.no_grad():
        model.generate(**enc, max_new_tokens=16, do_sample=False)
'''


def widen(folder: Path, params: float) -> int:
    """Widen every MLP of the model in `folder` with zero-output units until it holds about `params`
    parameters; returns the parameter count. Seeded, so a base and its fine-tune get the same new units."""
    import torch
    from safetensors.torch import load_file, save_file

    config = json.loads((folder / "config.json").read_text())
    tensors = load_file(str(folder / "model.safetensors"))
    current = sum(t.numel() for t in tensors.values())
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    extra = max(0, int((params - current) / (3 * hidden * layers)))
    generator = torch.Generator().manual_seed(0)
    for layer in range(layers):
        prefix = f"model.layers.{layer}.mlp."
        for name in ("gate_proj", "up_proj"):
            weight = tensors[prefix + name + ".weight"]
            new = torch.randn(extra, hidden, generator=generator) * 0.02
            tensors[prefix + name + ".weight"] = torch.cat([weight, new.to(weight.dtype)]).contiguous()
        down = tensors[prefix + "down_proj.weight"]
        tensors[prefix + "down_proj.weight"] = torch.cat([down, torch.zeros(hidden, extra, dtype=down.dtype)],
                                                         dim=1).contiguous()
    config["intermediate_size"] += extra
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return sum(t.numel() for t in tensors.values())


def deepen(folder: Path, params: float) -> int:
    """Grow the model in `folder` to about `params` parameters in the proportions of a real checkpoint
    (hidden 1024 or 2048, 32 or 64 heads of the fixture's head size, MLP 2.75 x hidden), function-preserving;
    returns the parameter count. The residual stream gets zero channels (RMSNorm weights and eps rescaled so
    the norm of the old channels is unchanged), the new heads and units have zero output weights, and layers
    are added whose output projections are zero: every forward pass costs what a real model of that size
    costs, per token, in compute and activation memory, and the replies are the small model's."""
    import torch
    from safetensors.torch import load_file, save_file

    config = json.loads((folder / "config.json").read_text())
    old = load_file(str(folder / "model.safetensors"))
    small, head = config["hidden_size"], config["head_dim"]
    hidden = 2048 if params >= 7e8 else 1024
    heads = hidden // head
    kv_heads = heads * config["num_key_value_heads"] // config["num_attention_heads"]
    inner = int(2.75 * hidden) // 64 * 64
    per_layer = hidden * head * (2 * heads + 2 * kv_heads) + 3 * hidden * inner + 2 * hidden
    embeddings = 2 * config["vocab_size"] * hidden + hidden
    layers = max(config["num_hidden_layers"], round((params - embeddings) / per_layer))
    generator = torch.Generator().manual_seed(0)
    scale = (small / hidden) ** 0.5

    def block(shape, keep=None, random=True):
        out = torch.randn(*shape, generator=generator) * 0.02 if random else torch.zeros(*shape)
        if keep is not None:
            out[: keep.shape[0], : keep.shape[1]] = keep
        return out.contiguous()

    new = {"model.embed_tokens.weight": block((config["vocab_size"], hidden), old["model.embed_tokens.weight"], False),
           "lm_head.weight": block((config["vocab_size"], hidden), old["lm_head.weight"], False),
           "model.norm.weight": torch.cat([old["model.norm.weight"] * scale, torch.ones(hidden - small)])}
    for layer in range(layers):
        prefix = f"model.layers.{layer}."
        kept = layer < config["num_hidden_layers"]

        def weight(name, shape, random=True):
            new[prefix + name + ".weight"] = block(shape, old[prefix + name + ".weight"] if kept else None, random)

        weight("self_attn.q_proj", (heads * head, hidden), random=not kept)
        weight("self_attn.k_proj", (kv_heads * head, hidden), random=not kept)
        weight("self_attn.v_proj", (kv_heads * head, hidden), random=not kept)
        weight("self_attn.o_proj", (hidden, heads * head), random=False)
        weight("mlp.gate_proj", (inner, hidden))
        weight("mlp.up_proj", (inner, hidden))
        if kept:  # the new units' inputs are random, their outputs zero
            for name in ("mlp.gate_proj", "mlp.up_proj"):
                new[prefix + name + ".weight"][: old[prefix + name + ".weight"].shape[0], small:] = 0
        weight("mlp.down_proj", (hidden, inner), random=False)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            base = old[prefix + norm + ".weight"] * scale if kept else torch.ones(small)
            new[prefix + norm + ".weight"] = torch.cat([base, torch.ones(hidden - small)])
    dtype = next(iter(old.values())).dtype
    new = {name: tensor.to(dtype).contiguous() for name, tensor in new.items()}
    config.update(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=inner,
                  num_hidden_layers=layers, rms_norm_eps=config["rms_norm_eps"] * small / hidden)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    save_file(new, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return sum(t.numel() for t in new.values())


SHAPES = {"mlp": widen, "real": deepen}


def measured(args: list[str], cwd: Path | None = None) -> tuple[int, float, int]:
    out = subprocess.run([sys.executable, "-c", MEASURE, *args], capture_output=True, text=True, cwd=cwd)
    line = [x for x in out.stdout.splitlines() if x.startswith("MEASURED")][-1].split()
    return int(line[1]), float(line[2]), int(line[3])


def per_rung(report_path: Path) -> list[str]:
    report = json.loads(report_path.read_text())
    rows = []
    for rung in report["rungs"]:
        if rung["status"] in ("not-run", "blocked"):
            continue
        cost = rung.get("evidence", {}).get("cost", {})
        rows.append(f"    {rung['id']:<22} {rung['status']:<6} {rung['seconds']:7.1f} s"
                    f"  loads {cost.get('model_loads', 0)}  forward {cost.get('forward_passes', 0):4d}"
                    f"  generate {cost.get('generate_calls', 0):3d}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=float, nargs="+", default=[400e6])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="mlp",
                        help="mlp: the fixture's 4 layers, hidden 128, each MLP widened (issue 16's bench); real: "
                             "a real checkpoint's proportions (hidden 1024/2048, MLP 2.75 x, more layers)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each command (the median is printed)")
    args = parser.parse_args()

    from ladder.fixtures.cases import build_case

    for params in args.params:
        work = Path(tempfile.mkdtemp(prefix="ladder-bench-scale-"))
        try:
            cases = {}
            for name in ("founding", "healthy"):
                folder = build_case(name, dest=work / name)
                count = SHAPES[args.shape](folder / "model", params)
                if (folder / "base").is_dir():
                    SHAPES[args.shape](folder / "base", params)
                case = yaml.safe_load((folder / "case.yaml").read_text())
                case["device"] = args.device
                (folder / "case.yaml").write_text(yaml.safe_dump(case, sort_keys=False))
                cases[name] = (folder, [p["prompt"] for p in case.get("prompts", [])])
            model_bytes = (cases["founding"][0] / "model" / "model.safetensors").stat().st_size
            print(f"\n{count / 1e6:.0f}M parameters ({args.shape} shape), {model_bytes / 1e9:.2f} GB per model "
                  f"(float32), device {args.device}")

            def median_of(command, cwd=None):
                runs = [measured(command, cwd) for _ in range(args.repeat)]
                return statistics.median(r[1] for r in runs), max(r[2] for r in runs), runs[-1][0]

            folder, prompts = cases["founding"]
            script = work / "script.py"
            script.write_text(SCRIPT.format(folder=str(folder), prompts=prompts, model=str(folder / "model"),
                                            device=args.device))
            base_wall, base_rss, _ = median_of([sys.executable, str(script)])
            print(f"  script (harness + a second load + the template): {base_wall:6.1f} s, "
                  f"peak RSS {base_rss / 1e9:.2f} GB = {base_rss / model_bytes:.2f} x the model")
            for label, name, extra in (("founding case", "founding", []),
                                       ("founding --keep-going", "founding", ["--keep-going"]),
                                       ("fixed --keep-going", "healthy", ["--keep-going"])):
                folder, _ = cases[name]
                report = work / f"{name}{'-all' if extra else ''}.json"
                wall, rss, code = median_of([sys.executable, "-m", "ladder", "probe", str(folder / "case.yaml"),
                                             "--json", str(report), *extra])
                print(f"  ladder {label:<22} exit {code}: {wall:6.1f} s = {wall / base_wall:.2f} x the script, "
                      f"peak RSS {rss / 1e9:.2f} GB = {rss / model_bytes:.2f} x the model")
                if report.exists():
                    print("\n".join(per_rung(report)))
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
