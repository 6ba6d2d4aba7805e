"""Backends: how the model is reached. `hf` (transformers in-process) and `openai` (an OpenAI-compatible server).

Every backend implements the `Backend` contract (`ladder.backends.contract`): capabilities, and the methods
probes use. Probes reach the checkpoint through `model_backend(ctx)` and the server through
`served_model(ctx)`, and nothing else.

A backend class declares `name`, the `capabilities` it can offer (`generate`, `logits`, `hidden_states`,
`weights`, `chat_template`; `chat`, `completions`, `logprobs` over HTTP), `reaches(case)` (whether the
case reaches the model through it) and `how_to_reach` (the flag that would). Backends register through
the entry-point group `ladder.backends`, as probes do through `ladder.probes`; a backend that fails to
load is left out with its reason in `problems()`.

The runner asks `missing_capabilities(reached_backends(case), probe.capabilities)` before each rung: a
probe that needs a capability no reached backend offers is a `skip` that names it and the backend that
offers it, never a `pass` on a path that could not measure.
"""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from ladder.backends.contract import Backend, MissingCapability, UndeclaredCapability, require

if TYPE_CHECKING:
    from ladder.probes.base import ProbeContext

__all__ = ["Backend", "MissingCapability", "UndeclaredCapability", "require", "model_backend", "served_model"]

GROUP = "ladder.backends"

_runtime: dict[str, type] = {}
_problems: list[str] = []


def register_backend(backend: type) -> None:
    """Add a backend class at run time (tests, notebooks). Names already taken are refused."""
    if backend.name in backend_classes():
        raise ValueError(f"backend {backend.name!r} is already registered")
    _runtime[backend.name] = backend


def unregister_backend(name: str) -> None:
    _runtime.pop(name, None)


def backend_classes() -> dict[str, type]:
    """Every backend class by name: the entry-point group's, then those registered at run time."""
    return {**_installed_backends(), **_runtime}


@functools.lru_cache(maxsize=1)
def _installed_backends() -> dict[str, type]:
    """The entry-point group's backend classes, looked up once per process."""
    found: dict[str, type] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name):
        try:
            module, _, attr = ep.value.partition(":")
            found.setdefault(ep.name, getattr(importlib.import_module(module), attr))
        except Exception as exc:  # a broken plugin never stops ladder
            message = f"backend {ep.name!r} ({ep.value}) failed to load: {exc}"
            if message not in _problems:
                _problems.append(message)
    return found


def problems() -> list[str]:
    return list(_problems)


def reached_backends(case: Any) -> dict[str, frozenset[str]]:
    """The backends the case reaches the model through, with the capabilities each offers."""
    return {name: frozenset(cls.capabilities) for name, cls in backend_classes().items() if cls.reaches(case)}


def missing_capabilities(reached: dict[str, frozenset[str]],
                         wanted: tuple[str, ...]) -> tuple[list[str], str] | None:
    """None when the `reached` backends (`reached_backends(case)`) offer every capability in `wanted` (or the
    case reaches none: then the probe's `needs` say what to give); else the missing ones and a sentence
    naming who offers them."""
    if not reached or not wanted:
        return None
    offered = frozenset().union(*reached.values())
    missing = [capability for capability in wanted if capability not in offered]
    if not missing:
        return None
    plural = len(missing) > 1
    names = ", ".join(f"`{c}`" for c in missing)
    through = " and ".join(f"the {name} backend" for name in reached)
    offers = [f"the {name} backend ({cls.how_to_reach})" for name, cls in backend_classes().items()
              if name not in reached and set(missing) <= set(cls.capabilities)]
    where = f"; {' or '.join(offers)} {'offer' if len(offers) > 1 else 'offers'} {'them' if plural else 'it'}" \
        if offers else "; no installed backend offers " + ("them" if plural else "it")
    return missing, f"needs the {names} capabilit{'ies' if plural else 'y'}, which {through} cannot give{where}"


def model_backend(ctx: "ProbeContext", which: str = "model") -> Backend:
    """The case's checkpoint (`model`, or `base`) as the run reaches it, loaded once per run and shared by
    every rung: the `hf` backend (in-process). Skips the rung when the case names no such checkpoint."""
    from ladder.backends.hf import hf_model

    return hf_model(ctx, which)


def served_model(ctx: "ProbeContext") -> Backend:
    """The run's served model (`--endpoint`), discovered on first use: the `openai` backend."""
    from ladder.backends.openai import served_model as discovered

    return discovered(ctx)
