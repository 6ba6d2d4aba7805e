"""load-report: the checkpoint did not load as the user thinks.

What it checks:
    Loads the checkpoint (once per run, shared with the other rungs) and reads
    transformers' own loading report: weights the model expects but the files
    lack (newly initialised at random, e.g. an untied `lm_head`), weights in the
    files the model does not use, and shape mismatches. It compares the dtype
    stored on disk (safetensors headers) with the dtype the harness's model had
    in memory, looks for an adapter (`adapter_config.json`) in or beside the
    checkpoint, or in the run directory, that the harness never applied, and checks that the harness
    loaded the checkpoint the case names.

Why it matters:
    transformers loads a checkpoint with missing weights after a warning that
    scrolls past: the missing layers are random, and the model "produces
    garbage" for a reason that has nothing to do with training. An adapter that
    was trained but never applied gives the base model's behaviour.

Symptom:
    Uniform nonsense from the first token, a model that behaves exactly like the
    base, or a model whose outputs change between two loads.

Fix:
    Save the full state dict (tie or save `lm_head`), load with the model class
    the checkpoint was saved from, apply the adapter (`PeftModel.from_pretrained`
    or `model.load_adapter`) or merge it, and load the path you trained into.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ladder.probes.base import Probe, ProbeContext, failed, passed, warned

SAFETENSORS_DTYPES = {"BF16": "torch.bfloat16", "F16": "torch.float16", "F32": "torch.float32",
                      "F64": "torch.float64", "I8": "torch.int8", "U8": "torch.uint8"}


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_names: int = Field(default=20, ge=1, description="At most this many weight names in the evidence.")


def disk_dtypes(folder: Path) -> dict[str, int]:
    """Tensor dtypes stored in the folder's safetensors files (from their headers), counted."""
    counts: Counter[str] = Counter()
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with open(file, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(length))
        except (OSError, ValueError, struct.error):
            continue
        for name, entry in header.items():
            if name != "__metadata__" and isinstance(entry, dict):
                counts[SAFETENSORS_DTYPES.get(entry.get("dtype"), entry.get("dtype"))] += 1
    return dict(counts)


def adapter_dirs(folder: Path, extra: list[Path] = ()) -> list[Path]:
    """Folders holding an adapter_config.json meant for this checkpoint: the checkpoint, a folder inside it,
    the run directory (and its checkpoint folders), or a folder beside the checkpoint whose adapter names
    it as its base (a models folder holds adapters of other experiments too: those are not this one's)."""
    found: list[Path] = []
    for place in [folder, *extra]:
        if not place.is_dir():
            continue
        for candidate in [place, *place.glob("*/")]:
            if (candidate / "adapter_config.json").is_file() and candidate.resolve() not in found:
                found.append(candidate.resolve())
    if folder.parent != folder:
        for candidate in folder.parent.glob("*/"):
            if candidate != folder and candidate.resolve() not in found and adapter_names_base(candidate, folder):
                found.append(candidate.resolve())
    return found


def adapter_names_base(adapter: Path, checkpoint: Path) -> bool:
    """Whether the adapter's `base_model_name_or_path` is this checkpoint (a path to it, or its name)."""
    import json

    try:
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    base = str(config.get("base_model_name_or_path") or "") if isinstance(config, dict) else ""
    if not base:
        return False
    for root in (adapter, adapter.parent, Path.cwd()):
        candidate = (root / base) if not Path(base).is_absolute() else Path(base)
        if candidate.exists() and candidate.resolve() == checkpoint.resolve():
            return True
    return base.rstrip("/").rsplit("/", 1)[-1] == checkpoint.name


class LoadReport(Probe):
    name = "load-report"
    needs = ("model",)
    capabilities = ("weights",)
    Params = Params

    def run(self, ctx: ProbeContext):
        import os

        from ladder.backends import model_backend
        from ladder.backends.hf import local_checkpoint, same_weight_files
        from ladder.harness import harness_error_finding, harness_run

        params: Params = ctx.params
        folder = Path(ctx.case.model)
        model_backend(ctx)  # loaded before the harness runs, so that a harness loading it the same way shares it
        run = None
        if ctx.case.harness or ctx.case.harness_cmd or ctx.case.transcript:
            run = harness_run(ctx)
            if (problem := harness_error_finding(run, ctx)) is not None:
                return problem
        model = model_backend(ctx)  # a fresh copy when the harness changed the one it was lent
        info = model.loading_info or {}
        missing = sorted(info.get("missing_keys") or [])
        unexpected = sorted(info.get("unexpected_keys") or [])
        mismatched = [list(map(str, m)) if isinstance(m, (list, tuple)) else str(m)
                      for m in sorted(info.get("mismatched_keys") or [], key=str)]
        problems, warnings = [], []
        if missing:
            problems.append(f"{len(missing)} weights missing from the checkpoint were initialised at random: "
                            f"{', '.join(missing[:5])}")
        if unexpected:
            problems.append(f"{len(unexpected)} weights in the checkpoint were not used by the model: "
                            f"{', '.join(unexpected[:5])}")
        if mismatched:
            problems.append(f"{len(mismatched)} weights have another shape than the model expects")

        stored = disk_dtypes(folder)
        records = run.generate_records() if run is not None else []
        harness_dtypes = sorted({r["dtype"] for r in records if r.get("dtype")})
        ladder_dtype = str(model.network.dtype)
        if "torch.bfloat16" in stored and "torch.float16" in harness_dtypes:
            warnings.append("weights stored in bfloat16 ran in float16 in your harness (overflow risk: see numerics)")

        adapters = adapter_dirs(folder, [Path(ctx.case.run_dir)] if ctx.case.run_dir else [])
        applied = any(r.get("adapters_loaded") for r in records)
        loads = run.model_loads() if run is not None else []
        loaded_paths = [load.get("redirected_to") or load["path"] for load in loads]  # a sweep's swapped checkpoint
        if adapters and not applied:
            where = ", ".join(str(a) for a in adapters)
            if run is not None and run.form != "transcript":
                problems.append(f"an adapter ({where}) sits in or beside the checkpoint, but the model your "
                                f"harness ran had no adapter applied")
            else:
                warnings.append(f"an adapter ({where}) sits in or beside the checkpoint: make sure it is applied "
                                f"or merged")

        # an adapter folder as the model: the harness loads the adapter's base and applies the adapter to it
        merged = info.get("adapter_merged")
        own = [str(folder)] + ([info["base_model"]] if merged and info.get("base_model") else [])

        def same(a: str) -> bool:
            return os.path.exists(a) and os.path.realpath(a) in {os.path.realpath(o) for o in own}

        def copy(a: str) -> bool:  # another path (a copy, a hub id in the cache) to the same weights
            local = local_checkpoint(a)
            return local is not None and same_weight_files(local, str(folder))

        other = [p for p in loaded_paths if not same(p)]
        copies = [p for p in other if copy(p)]
        if loaded_paths and not any(same(p) for p in loaded_paths) and not copies:
            problems.append(f"your harness loaded {', '.join(other)}, not the case's model {folder}, and its "
                            "weight files differ")

        evidence = {
            "missing_keys": missing[: params.max_names], "unexpected_keys": unexpected[: params.max_names],
            "mismatched_keys": mismatched[: params.max_names],
            "counts": {"missing": len(missing), "unexpected": len(unexpected), "mismatched": len(mismatched)},
            "dtype": {"on_disk": stored, "in_memory_harness": harness_dtypes, "in_memory_ladder": ladder_dtype},
            "adapter_dirs": [str(a) for a in adapters], "adapter_applied_in_harness": applied,
            "harness_loaded": loaded_paths, "model": str(folder), "harness_loaded_same_weights_from": copies,
            "harness_shared_ladders_copy": any(load.get("lent_by_ladder") for load in loads),
        }
        if merged:
            evidence["adapter_merged_by_ladder"] = {**merged, "base_model": info.get("base_model")}
        if problems:
            return failed("; ".join(problems), problems=problems, warnings=warnings, **evidence)
        if warnings:
            return warned("; ".join(warnings), warnings=warnings, **evidence)
        read = (f"{sum(stored.values())} tensors" if stored else
                f"{sum(1 for _ in model.network.state_dict())} tensors, dequantized from the GGUF file"
                if str(folder).endswith(".gguf") else "no safetensors header to count")
        return passed(f"every weight loaded from the checkpoint ({read}), nothing initialised at random, no "
                      "unapplied adapter", **evidence)
