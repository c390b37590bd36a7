"""The `[sim]` table of a station config: physics, pacing and faults of the simulator.

The daemon stores `[sim]` without looking inside, so it is validated here, with the
same kind of messages (key path, what is wrong) as the rest of the config.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from acquisition.config import StationConfig, pydantic_problems
from simulators.faults import Fault, FaultKind, make_fault
from simulators.physics import DEFAULT_NOISE, DEFAULT_TIME_CONSTANT_S


class SimConfigError(ValueError):
    """A `[sim]` table that cannot be used; `problems` are (key path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{key}: {message}" for key, message in problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceSim(_Strict):
    """`[sim.mfcs.<name>]`: how one simulated MFC behaves."""

    time_constant_s: float = Field(DEFAULT_TIME_CONSTANT_S, gt=0, le=600,
                                   description="first-order response to the setpoint")
    noise: float = Field(DEFAULT_NOISE, ge=0, le=0.5,
                         description="flow reading noise, 1 sigma, fraction of full scale")
    fault: FaultKind | None = Field(None, description="fault active from start-up")
    fault_code: int | None = Field(None, description="Modbus exception code, fault 'exception'")
    fault_seconds: float | None = Field(None, description="reply delay, fault 'slow'")

    @model_validator(mode="after")
    def _fault_arguments(self) -> DeviceSim:
        if self.fault is None and (self.fault_code is not None or self.fault_seconds is not None):
            raise ValueError("fault_code / fault_seconds need a `fault`")
        self.initial_fault()  # raises ValueError with the reason
        return self

    def initial_fault(self) -> Fault | None:
        if self.fault is None:
            return None
        return make_fault(self.fault, code=self.fault_code, seconds=self.fault_seconds)


class LineSim(_Strict):
    """`[sim.lines.<name>]`: per-line overrides."""

    pace: bool | None = Field(None, description="answer at the line's byte timing")


class SimSettings(_Strict):
    """`[sim]`."""

    pace: bool = Field(True, description="answer serial lines at their real byte timing")
    seed: int | None = Field(None, ge=0, description="noise generator seed (reproducible runs)")
    mfcs: dict[str, DeviceSim] = {}
    lines: dict[str, LineSim] = {}

    def device(self, name: str) -> DeviceSim:
        return self.mfcs.get(name) or DeviceSim()

    def paced(self, line: str) -> bool:
        override = self.lines.get(line)
        return self.pace if override is None or override.pace is None else override.pace


def sim_settings(config: StationConfig) -> SimSettings:
    """Validate `config.sim`, including that it names only configured MFCs and lines."""
    try:
        settings = SimSettings.model_validate(config.sim)
    except ValidationError as error:
        raise SimConfigError(pydantic_problems(error, prefix="sim")) from None
    problems = [
        (f"sim.mfcs.{name}", f"no MFC named '{name}' (defined: {', '.join(config.mfcs)})")
        for name in settings.mfcs if name not in config.mfcs
    ] + [
        (f"sim.lines.{name}", f"no line named '{name}' (defined: {', '.join(config.lines)})")
        for name in settings.lines if name not in config.lines
    ]
    if problems:
        raise SimConfigError(problems)
    return settings
