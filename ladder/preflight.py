"""Preflight: the rungs that need no model, run before training starts.

`ladder preflight` (and `ladder.integrations.transformers.LadderCallback` inside a Trainer) walks only the
rungs whose probes need neither a model's weights, a harness nor a server: today `data-count`,
`label-mask` (it loads the tokenizer only), `data-leak` and `config-read`. They take seconds, so a loader
that keeps 9% of the rows or a collator that masks every label stops the run at step 0 instead of after
hours of training. Every such rung runs (no stopping at the first culprit): a preflight lists all it finds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ladder.loader import Ladder
    from ladder.registry import ProbeRegistry

# inputs that mean a model is loaded or called: a rung needing one of them is not a preflight rung
MODEL_NEEDS = frozenset({"model", "base", "harness", "runnable-harness", "endpoint"})


def preflight_ladder(ladder_: "Ladder", registry: "ProbeRegistry") -> "Ladder":
    """`ladder_` with only its model-free rungs (no model, harness or server needed, no backend capability)."""
    from ladder.registry import BrokenProbe, UnknownProbe

    def model_free(rung) -> bool:
        try:
            probe = registry.get(rung.probe)
        except (UnknownProbe, BrokenProbe):
            return False
        return not (set(probe.needs) & MODEL_NEEDS) and not probe.capabilities

    kept = ladder_.only(model_free, name=f"{ladder_.name} (preflight)")
    if not kept.rungs:
        from ladder.errors import InputError

        raise InputError.single(f"the ladder {ladder_.name!r} has no rung that runs without a model: nothing "
                                "to preflight")
    return kept
