"""The vocabulary as pydantic models: tier, verdict, rung, ladder file, finding, report."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Tier(str, Enum):
    """How mundane a hypothesis is, from most to least."""

    INTERFACE = "interface"
    DATA = "data"
    CONFIG = "config"
    NUMERICS = "numerics"
    WEIGHTS = "weights"
    BEHAVIOUR = "behaviour"
    ARCHITECTURE = "architecture"

    @property
    def rank(self) -> int:
        return list(Tier).index(self)


class Status(str, Enum):
    """A probe's verdict, plus the two states the runner gives rungs it did not run."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"
    BLOCKED = "blocked"
    ERROR = "error"
    NOT_RUN = "not-run"


class Rung(BaseModel):
    """One hypothesis of a ladder and the probe that tests it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$",
                    description="Stable identifier, lower-case words joined by '-'.")
    title: str = Field(description="The hypothesis, in one line.")
    tier: Tier = Field(description="How mundane the hypothesis is; mundane tiers are walked first.")
    probe: str = Field(description="Name of a registered probe (see `ladder probes`).")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="Parameters passed to the probe; checked against its schema.")
    after: list[str] = Field(default_factory=list,
                             description="Rungs that must be walked (and not fail) before this one.")
    cost: float = Field(default=1.0, ge=0,
                        description="Relative cost; cheaper rungs go first among equals.")
    why: str = Field(description="Why this hypothesis matters.")
    fix: str = Field(description="What to do when the rung fails.")


class RungPatch(BaseModel):
    """A rung in a ladder that `extends` another: a new rung, or fields overriding one by id."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str | None = None
    tier: Tier | None = None
    probe: str | None = None
    params: dict[str, Any] | None = None
    after: list[str] | None = None
    cost: float | None = Field(default=None, ge=0)
    why: str | None = None
    fix: str | None = None


class LadderFile(BaseModel):
    """A ladder as written in YAML."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Name of the ladder, e.g. llm-checkpoint.")
    description: str = Field(default="", description="What the ladder is for.")
    extends: str | None = Field(default=None,
                                description="A shipped ladder's name, or a path, whose rungs this one starts from.")
    disable: list[str] = Field(default_factory=list,
                               description="Ids of inherited rungs to leave out.")
    rungs: list[RungPatch] = Field(default_factory=list,
                                   description="Rungs, in file order; in an extending ladder, a known id overrides.")


class Finding(BaseModel):
    """A verdict plus its evidence."""

    status: Status
    summary: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    traceback: str | None = None


class RungResult(BaseModel):
    """What the report says about one rung."""

    id: str
    tier: Tier
    title: str
    status: Status
    summary: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    seconds: float = 0.0
    fix: str | None = None
    traceback: str | None = None


class Culprit(BaseModel):
    rung: str
    summary: str
    fix: str | None = None


class Report(BaseModel):
    """The JSON report, schema `ladder.report/1`."""

    model_config = ConfigDict(populate_by_name=True)

    schema_: str = Field(default="ladder.report/1", alias="schema")
    culprit: Culprit | None = None
    rungs: list[RungResult] = Field(default_factory=list)
    case: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    ladder: str | None = None
    complete: bool = True
    interrupted: bool = False

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)
