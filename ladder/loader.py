"""Load and check ladders: YAML -> validated rungs, every problem reported at once with file:line:col."""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from ladder import rules_dir
from ladder.errors import InputError, Problem
from ladder.models import LadderFile, Rung, RungPatch
from ladder.yamlpos import Positions, load_yaml_mapping, position_of

DEFAULT_LADDER = "llm-checkpoint"


@dataclass
class Ladder:
    """A checked ladder: its rungs in file order and their walk order."""

    name: str
    description: str
    source: str
    rungs: list[Rung]
    order: list[str] = field(default_factory=list)

    def rung(self, rung_id: str) -> Rung:
        for rung in self.rungs:
            if rung.id == rung_id:
                return rung
        raise KeyError(rung_id)

    def ordered(self) -> list[Rung]:
        return [self.rung(rung_id) for rung_id in self.order]

    def only(self, keep: Callable[[Rung], bool], name: str | None = None) -> "Ladder":
        """This ladder with only the rungs `keep` accepts (their `after` edges to the others dropped)."""
        from ladder.graph import walk_order

        kept_ids = {rung.id for rung in self.rungs if keep(rung)}
        rungs = [rung.model_copy(update={"after": [a for a in rung.after if a in kept_ids]})
                 for rung in self.rungs if rung.id in kept_ids]
        return Ladder(name=name or self.name, description=self.description, source=self.source, rungs=rungs,
                      order=walk_order(rungs))


# ---- plain words for pydantic errors ---------------------------------------------------


def _model_at(model: type[BaseModel], location: tuple) -> type[BaseModel] | None:
    """The pydantic model that holds the key at `location` (for did-you-mean on unknown keys)."""
    current: Any = model
    for part in location:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        current = _unwrap(current.model_fields[part].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """list[X] / X | None / Optional[X] -> X, for the first BaseModel found."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _unwrap(arg)
            if found is not None:
                return found
    return None


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def plain_words(error: dict, model: type[BaseModel]) -> str:
    """One pydantic error as a sentence a user understands."""
    location = tuple(error["loc"])
    key = next((str(p) for p in reversed(location) if isinstance(p, str)), "")
    where = ".".join(str(p) for p in location)
    kind = error["type"]
    if kind == "extra_forbidden":
        holder = _model_at(model, location[:-1])
        choices = list(holder.model_fields) if holder else []
        known = f"; known keys: {', '.join(c for c in choices if c != 'source')}" if choices else ""
        return f"unknown key {key!r}{did_you_mean(key, choices)}{known}"
    if kind == "missing":
        return f"missing required key {key!r}" + (f" in {'.'.join(map(str, location[:-1]))}"
                                                  if len(location) > 1 else "")
    value = error.get("input")
    shown = f" (got {value!r})" if value is not None and not isinstance(value, (dict, list)) else ""
    message = error["msg"]
    if kind == "enum" and key == "tier":
        message = "unknown tier; " + message[0].lower() + message[1:]
    return f"{where}: {message}{shown}"


# ---- loading ----------------------------------------------------------------------------


def ladder_path(ref: str | Path | None) -> Path:
    """A ladder reference -> its file: a path, or the name of a shipped ladder."""
    if ref is None:
        ref = DEFAULT_LADDER
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in str(ref):
        return path
    shipped = rules_dir() / f"{ref}.yaml"
    if not shipped.is_file():
        available = sorted(p.stem for p in rules_dir().glob("*.yaml"))
        raise InputError.single(f"no ladder named {str(ref)!r}{did_you_mean(str(ref), available)}; "
                                f"shipped ladders: {', '.join(available)}; or give a path to a YAML file")
    return shipped


@dataclass
class _Defined:
    """Where a rung's fields were written (the base file, then each override)."""

    file: str
    positions: Positions
    index: int


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.invalid_rungs: list[tuple[str, Positions, int, dict]] = []  # (file, positions, index, raw)

    def add(self, message: str, file: str | None, positions: Positions | None = None,
            location: tuple = (), value: bool = False) -> None:
        line, col = position_of(positions, location, value) if positions else (None, None)
        self.problems.append(Problem(message, file, line, col))


def _read_ladder_file(path: Path, out: _Collector, chain: tuple[str, ...]
                      ) -> tuple[list[Rung], dict[str, list[_Defined]], LadderFile | None]:
    """Rungs (merged with what this file extends) and where each rung's fields came from."""
    shown = str(path)
    data, positions = load_yaml_mapping(path, "ladder")
    raw_rungs = data.get("rungs")
    try:
        spec = LadderFile.model_validate({**data, "rungs": []} if isinstance(raw_rungs, list) else data)
    except ValidationError as exc:
        _add_errors(out, exc, LadderFile, shown, positions)
        return [], {}, None
    patches: list[tuple[int, RungPatch | None, str | None]] = []  # (index in file, rung, its id)
    for index, item in enumerate(raw_rungs if isinstance(raw_rungs, list) else []):
        rung_id = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else None
        try:
            patch = RungPatch.model_validate(item)
        except ValidationError as exc:  # the other rungs are still checked
            _add_errors(out, exc, RungPatch, shown, positions, ("rungs", index))
            if isinstance(item, dict):
                out.invalid_rungs.append((shown, positions, index, item))
            patch = None
        patches.append((index, patch, rung_id))

    rungs: dict[str, dict[str, Any]] = {}
    origins: dict[str, list[_Defined]] = {}
    if spec.extends:
        base_path = _extends_path(spec.extends, path)
        if str(base_path.resolve()) in chain:
            out.add(f"extends loops back to {base_path}", shown, positions, ("extends",))
        else:
            try:
                base_rungs, origins, _ = _read_ladder_file(base_path, out, (*chain, str(base_path.resolve())))
            except InputError as exc:
                for problem in exc.problems:
                    out.problems.append(problem)
                base_rungs = []
            rungs = {r.id: r.model_dump() for r in base_rungs}

    inherited = set(rungs)
    seen_here: set[str] = set()
    for index, patch, rung_id in patches:
        if rung_id is not None and rung_id in seen_here:
            out.add(f"duplicate rung id {rung_id!r}", shown, positions, ("rungs", index, "id"), value=True)
            continue
        seen_here.add(rung_id)
        if patch is None:
            continue
        given = patch.model_dump(exclude_none=True)
        if patch.id in inherited:
            rungs[patch.id].update(given)
        else:
            rungs[patch.id] = given
        origins.setdefault(patch.id, []).append(_Defined(shown, positions, index))

    for index, rung_id in enumerate(spec.disable):
        if rung_id not in rungs:
            out.add(f"disable names unknown rung {rung_id!r}{did_you_mean(rung_id, rungs)}",
                    shown, positions, ("disable", index))
        rungs.pop(rung_id, None)

    checked: list[Rung] = []
    for rung_id, values in rungs.items():
        try:
            checked.append(Rung.model_validate(values))
        except ValidationError as exc:
            for error in exc.errors():
                field_name = error["loc"][0] if error["loc"] else ""
                where = _where(origins.get(rung_id, []), field_name)
                message = plain_words(error, Rung)
                if error["type"] == "missing":
                    message = f"rung {rung_id!r}: {message}"
                out.add(message, where.file if where else shown, where.positions if where else positions,
                        ("rungs", where.index, field_name) if where else (), value=True)
    disabled = set(spec.disable)
    for rung in checked:
        rung.after = [a for a in rung.after if a not in disabled]
    return checked, origins, spec


def _add_errors(out: _Collector, exc: ValidationError, model: type[BaseModel], file: str,
                positions: Positions, prefix: tuple = ()) -> None:
    for error in exc.errors():
        error = {**error, "loc": (*prefix, *error["loc"])}
        holder = LadderFile if prefix else model
        out.add(plain_words(error, holder), file, positions, tuple(error["loc"]),
                value=error["type"] not in ("extra_forbidden", "missing"))


def _extends_path(ref: str, from_file: Path) -> Path:
    candidate = Path(ref)
    if candidate.suffix in (".yaml", ".yml") or "/" in ref:
        return candidate if candidate.is_absolute() else from_file.parent / candidate
    return ladder_path(ref)


def _where(origins: list[_Defined], field_name: str) -> _Defined | None:
    """The last file that wrote `field_name` of a rung (or that defined the rung)."""
    for origin in reversed(origins):
        if ("rungs", origin.index, field_name) in origin.positions:
            return origin
    return origins[-1] if origins else None


def _check_probe(registry, probe_name: str, params: dict, say) -> None:
    """The probe exists and accepts the params; `say(field, message, sub_location)` reports."""
    from ladder.registry import BrokenProbe, UnknownProbe

    try:
        probe = registry.get(probe_name)
    except (UnknownProbe, BrokenProbe) as exc:
        say("probe", str(exc), ())
        return
    try:
        probe.Params.model_validate(params)
    except ValidationError as exc:
        accepted = ", ".join(probe.Params.model_fields) or "none"
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else ""
            if error["type"] == "extra_forbidden":
                message = (f"probe {probe_name!r} does not accept param {name!r}"
                           f"{did_you_mean(name, probe.Params.model_fields)}; it accepts: {accepted}")
            else:
                message = f"param {plain_words(error, probe.Params)}"
            say("params", message, (name,) if name else ())


def load_ladder(ref: str | Path | None = None, registry=None) -> Ladder:
    """Read, merge and check a ladder; raise InputError listing every problem."""
    from ladder.graph import find_cycles, walk_order
    from ladder.registry import ProbeRegistry

    path = ladder_path(ref)
    registry = registry or ProbeRegistry()
    out = _Collector()
    rungs, origins, spec = _read_ladder_file(path, out, (str(path.resolve()),))
    ids = {rung.id for rung in rungs}

    def report(rung: Rung, field_name: str, message: str, sub: tuple = ()) -> None:
        where = _where(origins.get(rung.id, []), field_name)
        if where:
            out.add(message, where.file, where.positions, ("rungs", where.index, field_name, *sub),
                    value=True)
        else:
            out.add(message, str(path))

    for rung in rungs:
        _check_probe(registry, rung.probe, rung.params,
                     lambda field_name, message, sub, rung=rung: report(rung, field_name, message, sub))
    for file, positions, index, item in out.invalid_rungs:  # their probe is still worth checking
        if isinstance(item.get("probe"), str):
            _check_probe(registry, item["probe"], item.get("params") if isinstance(item.get("params"), dict) else {},
                         lambda field_name, message, sub, file=file, positions=positions, index=index:
                         out.add(message, file, positions, ("rungs", index, field_name, *sub), value=True))
    for rung in rungs:
        for index, before in enumerate(rung.after):
            if before not in ids:
                report(rung, "after", f"after names unknown rung {before!r}{did_you_mean(before, ids)}",
                       (index,))
    for cycle in find_cycles(rungs):
        first = next(r for r in rungs if r.id == cycle[0])
        report(first, "after", "cycle in after: " + " -> ".join([*cycle, cycle[0]]))

    if out.problems:
        raise InputError(out.problems)
    assert spec is not None
    ladder = Ladder(name=spec.name, description=spec.description, source=str(path), rungs=rungs)
    ladder.order = walk_order(rungs)
    return ladder
