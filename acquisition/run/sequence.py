"""Calibration sequences: the release schedule an operator defines, validated and expanded.

A sequence file lists steps (release point, target rate with its unit, settle and hold
times, repeats); blank steps release nothing. Expansion turns repeats into individual
steps, optionally shuffled with a recorded seed (single-blind practice, as METEC does),
and checks every rate against the point's and its MFCs' limits before anything moves.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from acquisition.config.station import ConfigError, StationConfig, pydantic_problems, read_toml
from acquisition.config.tables import Strict
from acquisition.gas import RATE_UNITS, to_kg_h


class StepTiming(Strict):
    """How a step waits for a stable flow and how long it averages."""

    settle_tolerance_pct: float = Field(2.0, gt=0, le=50, description="of target, or of FS")
    settle_window_s: float = Field(10.0, gt=0, le=3600, description="stable for this long")
    settle_timeout_s: float = Field(120.0, gt=0, le=7200)
    hold_s: float = Field(60.0, gt=0, le=86_400, description="averaging window")
    on_settle_timeout: Literal["skip", "abort"] = "skip"


class StepSpec(Strict):
    point: str
    rate: float = Field(ge=0, description="0 for a blank (zero-release) step")
    unit: str = "kg/h"
    repeats: int = Field(1, ge=1, le=100)
    settle_tolerance_pct: float | None = Field(None, gt=0, le=50)
    settle_window_s: float | None = Field(None, gt=0, le=3600)
    settle_timeout_s: float | None = Field(None, gt=0, le=7200)
    hold_s: float | None = Field(None, gt=0, le=86_400)
    on_settle_timeout: Literal["skip", "abort"] | None = None

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, value: str) -> str:
        if value not in RATE_UNITS:
            raise ValueError(f"unknown rate unit '{value}'; use one of {', '.join(RATE_UNITS)}")
        return value


class SequenceSpec(Strict):
    name: str
    description: str = ""
    blind: bool = Field(False, description="public topics show no rate until the run ends")
    randomize: bool = False
    seed: int | None = Field(None, description="shuffle seed; drawn and recorded if absent")
    defaults: StepTiming = StepTiming()
    steps: list[StepSpec] = Field(min_length=1)


@dataclass(frozen=True)
class PlannedStep:
    """One step as it will run: target in kg/h of the species and its full timing."""

    index: int
    point: str
    target_kg_h: float
    target_value: float
    target_unit: str
    repeat: int
    timing: StepTiming

    @property
    def blank(self) -> bool:
        return self.target_kg_h == 0.0


@dataclass(frozen=True)
class Plan:
    spec: SequenceSpec
    steps: list[PlannedStep]
    seed: int | None
    definition_json: str
    sequence_hash: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.spec.name, "seed": self.seed, "blind": self.spec.blind,
                "steps": [asdict(step) for step in self.steps]}


def _timing(defaults: StepTiming, step: StepSpec) -> StepTiming:
    overrides = {key: getattr(step, key) for key in StepTiming.model_fields
                 if getattr(step, key) is not None}
    return defaults.model_copy(update=overrides)


def mfc_capacity_kg_h(config: StationConfig, mfc: str) -> float:
    """The most an MFC can release, in kg/h of the species."""
    return config.conversion(mfc).mass_rate(config.mfcs[mfc].full_scale)


def _limit_problems(config: StationConfig, key: str, step: StepSpec, kg_h: float
                    ) -> list[tuple[str, str]]:
    point = config.release_points.get(step.point)
    if point is None:
        return [(f"{key}.point", f"unknown release point '{step.point}' "
                 f"(defined: {', '.join(config.release_points) or 'none'})")]
    if kg_h == 0:
        return []
    if not point.mfcs:
        return [(f"{key}.point", f"release point '{step.point}' has no MFCs")]
    problems = []
    if point.max_rate is not None:
        limit = to_kg_h(point.max_rate, point.max_rate_unit, config.gas.species)
        if kg_h > limit:
            problems.append((f"{key}.rate", f"{step.rate} {step.unit} ({kg_h:.4g} kg/h) is "
                             f"above the limit of point '{step.point}' ({limit:.4g} kg/h)"))
    capacity = max(mfc_capacity_kg_h(config, mfc) for mfc in point.mfcs)
    if kg_h > capacity:
        problems.append((f"{key}.rate", f"{step.rate} {step.unit} ({kg_h:.4g} kg/h) is above "
                         f"the largest MFC of point '{step.point}' ({capacity:.4g} kg/h)"))
    return problems


def plan_sequence(spec: SequenceSpec, config: StationConfig, source: Path,
                  seed: int | None = None) -> Plan:
    """Validate a sequence against the station and expand it; raise ConfigError if unfit."""
    problems: list[tuple[str, str]] = []
    expanded: list[PlannedStep] = []
    for number, step in enumerate(spec.steps):
        kg_h = to_kg_h(step.rate, step.unit, config.gas.species)
        problems += _limit_problems(config, f"steps[{number}]", step, kg_h)
        timing = _timing(spec.defaults, step)
        expanded += [PlannedStep(0, step.point, kg_h, step.rate, step.unit, repeat, timing)
                     for repeat in range(1, step.repeats + 1)]
    if problems:
        raise ConfigError(source, problems)
    used_seed = seed if seed is not None else spec.seed
    if spec.randomize:
        if used_seed is None:
            used_seed = random.SystemRandom().randrange(2**31)
        random.Random(used_seed).shuffle(expanded)
    steps = [replace(step, index=index) for index, step in enumerate(expanded)]
    definition = spec.model_dump_json()
    return Plan(spec, steps, used_seed if spec.randomize else None, definition,
                hashlib.sha256(definition.encode()).hexdigest()[:16])


def load_sequence(name_or_path: str, config: StationConfig, seed: int | None = None) -> Plan:
    """A sequence by name (config's sequences_dir/NAME.toml) or path, planned and checked."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = config.sequences_dir / f"{name_or_path}.toml"
    known = sorted(p.stem for p in config.sequences_dir.glob("*.toml"))
    raw = read_toml(path, missing=f"no such sequence (in {config.sequences_dir}: "
                                  f"{', '.join(known) or 'none'})")
    try:
        spec = SequenceSpec.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(path, pydantic_problems(error)) from None
    return plan_sequence(spec, config, path, seed)
