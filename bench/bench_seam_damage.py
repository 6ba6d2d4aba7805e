"""Benchmark of the seam-damage measurement: time and peak memory against depth and sequence length.

Random-init Llamas of the fixture factory's width (hidden 128, 4 heads, vocab 500) with 2, 4, 8 and
16 layers. Each configuration runs in a fresh subprocess so its peak resident memory (ru_maxrss) is
its own; the figure reported is the peak over the process's baseline after the model is built. For
comparison, the same batch through `output_hidden_states=True` (which keeps every layer's hidden
state) is measured too.

    python bench/bench_seam_damage.py [--repeats 3] [--batch 8] [--threads 2]

Expected: time grows linearly with the layer count; the hooked pass's extra memory does not grow
with depth, and grows with sequence length only as one forward pass does (one hidden state and one
layer's logit-lens logits at a time), while output_hidden_states grows with layers x tokens.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

WIDTH = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4, "num_key_value_heads": 4,
         "vocab_size": 500}


def child(layers: int, seq: int, batch: int, repeats: int, threads: int, mode: str) -> dict:
    import resource

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from ladder.internals import ProbeBatch
    from ladder.probes.seam_damage import measure_layers

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = LlamaConfig(num_hidden_layers=layers, max_position_embeddings=max(seq, 128), **WIDTH)
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(5, WIDTH["vocab_size"], (batch, seq))
    mask = torch.ones_like(ids)
    probe = ProbeBatch(rows=ids.tolist(), texts=[], templated=False, input_ids=ids, attention_mask=mask,
                       position_ids=(mask.cumsum(-1) - 1))

    class Handle:  # what measure_layers reads of the backend
        pass

    hf = Handle()
    hf.network = model
    with torch.no_grad():  # warm-up: allocator and kernels, not counted
        model(input_ids=ids[:1, :8])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        if mode == "hooks":
            measure_layers(hf, probe)
        else:
            with torch.no_grad():
                out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
                kept = [h.float().norm(dim=-1).mean() for h in out.hidden_states]
                del out, kept
        times.append(time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"layers": layers, "seq": seq, "mode": mode, "seconds": min(times),
            "extra_peak_mib": (after - before) / 1024}


def run_child(layers: int, seq: int, args, mode: str) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {repr(str(__file__).rsplit('/', 1)[0])}); "
            f"import bench_seam_damage as b; "
            f"print(json.dumps(b.child({layers}, {seq}, {args.batch}, {args.repeats}, {args.threads}, {mode!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seq", type=int, default=256, help="sequence length of the depth sweep")
    args = parser.parse_args()

    print(f"depth sweep: batch {args.batch} x {args.seq} tokens, hidden 128, best of {args.repeats}")
    print(f"{'layers':>6} {'hooks s':>9} {'ms/layer':>9} {'all-hidden s':>13} {'hooks +MiB':>11} "
          f"{'all-hidden +MiB':>16}")
    for layers in (2, 4, 8, 16):
        hooks = run_child(layers, args.seq, args, "hooks")
        full = run_child(layers, args.seq, args, "hidden_states")
        print(f"{layers:>6} {hooks['seconds']:>9.3f} {1000 * hooks['seconds'] / layers:>9.1f} "
              f"{full['seconds']:>13.3f} {hooks['extra_peak_mib']:>11.1f} {full['extra_peak_mib']:>16.1f}")

    print(f"\nsequence sweep: 8 layers, batch {args.batch}")
    print(f"{'tokens':>6} {'hooks s':>9} {'hooks +MiB':>11} {'all-hidden +MiB':>16}")
    for seq in (128, 256, 512, 1024):
        hooks = run_child(8, seq, args, "hooks")
        full = run_child(8, seq, args, "hidden_states")
        print(f"{seq:>6} {hooks['seconds']:>9.3f} {hooks['extra_peak_mib']:>11.1f} {full['extra_peak_mib']:>16.1f}")


if __name__ == "__main__":
    main()
