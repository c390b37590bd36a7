"""The `[sim]` table of a station config: physics, pacing and faults of the simulator,
and what the simulated GNSS receivers and weather devices report.

The daemon stores `[sim]` without looking inside, so it is validated here, with the
same kind of messages (key path, what is wrong) as the rest of the config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from acquisition.config.station import ModbusMetConfig, StationConfig, pydantic_problems
from acquisition.config.tables import TextAnalyzerConfig
from simulators.faults import Fault, FaultKind, make_fault
from simulators.physics import DEFAULT_NOISE, DEFAULT_TIME_CONSTANT_S
from simulators.plume import Stability


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


FixQuality = Literal["none", "autonomous", "dgnss", "rtk_float", "rtk_fixed"]
GnssSentence = Literal["GGA", "RMC", "GNS", "GST", "ZDA", "GSA"]
Talker = Literal["GP", "GN", "GL", "GA", "BD", "GB"]


class GnssSim(_Strict):
    """`[sim.gnss.<name>]`: one simulated receiver, or the replay of a capture."""

    latitude: float | None = Field(None, ge=-90, le=90, description="true antenna position")
    longitude: float | None = Field(None, ge=-180, le=180)
    altitude_m: float | None = Field(None, ge=-500, le=9000)
    rate_hz: float = Field(1.0, ge=1, le=10, description="epochs per second")
    sentences: tuple[GnssSentence, ...] = Field(("GGA", "RMC", "GST", "ZDA", "GSA"),
                                                min_length=1, description="sent each epoch")
    talker: Talker = "GN"
    fix_quality: FixQuality = "rtk_fixed"
    fix_loss_every_s: float | None = Field(None, gt=0, description="a fix-loss episode each")
    fix_loss_duration_s: float | None = Field(None, gt=0, description="... lasting this long")
    corrupt_fraction: float = Field(0.0, ge=0, le=1, description="sentences with a bad checksum")
    junk: bool = Field(False, description="binary UBX frames between sentences")
    clock_offset_s: float = Field(0.0, ge=-86_400, le=86_400,
                                  description="receiver UTC = host clock + this")
    replay: Path | None = Field(None, description="send this capture at its own pace instead")
    seed: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> GnssSim:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("give both `latitude` and `longitude`, or neither")
        if len(set(self.sentences)) != len(self.sentences):
            raise ValueError("`sentences` names a sentence twice")
        every, duration = self.fix_loss_every_s, self.fix_loss_duration_s
        if (every is None) != (duration is None):
            raise ValueError("give both `fix_loss_every_s` and `fix_loss_duration_s`, or neither")
        if every is not None and duration is not None and duration >= every:
            raise ValueError("`fix_loss_duration_s` must be shorter than `fix_loss_every_s`")
        unused = sorted(self.model_fields_set - {"replay"})
        if self.replay is not None and unused:
            raise ValueError(f"`replay` sends the capture as it is: remove {', '.join(unused)}")
        return self


class MetSim(_Strict):
    """`[sim.met.<name>]`: the wind (and air) one simulated weather device reports."""

    wind_speed_m_s: float = Field(3.0, ge=0, le=75, description="mean wind speed")
    gust_m_s: float = Field(0.8, ge=0, le=30, description="1-sigma of the gusts")
    direction_deg: float = Field(270.0, ge=0, lt=360, description="mean direction (from)")
    direction_drift_deg_per_min: float = Field(2.0, ge=-180, le=180)
    temperature_c: float = Field(20.0, ge=-60, le=60)
    pressure_hpa: float = Field(1013.25, ge=500, le=1100)
    rate_hz: float = Field(1.0, ge=0.1, le=10, description="NMEA bursts per second")
    seed: int | None = Field(None, ge=0)


AnalyzerFormat = Literal["delimited", "keyvalue", "regex"]  # those drivers.analyzer reads


class AnalyzerSim(_Strict):
    """`[sim.analyzers.<name>]`: where a simulated gas analyzer samples the plume of the
    station's release, what air it sees, and how it writes its lines."""

    latitude: float = Field(ge=-90, le=90, description="the inlet, WGS-84")
    longitude: float = Field(ge=-180, le=180)
    height_m: float = Field(2.0, ge=0, le=100, description="inlet height above ground")
    release_height_m: float = Field(0.0, ge=0, le=50,
                                    description="outlet height of the release points")
    rate_hz: float = Field(1.0, ge=0.1, le=20, description="lines per second")
    format: AnalyzerFormat | None = Field(None, description="line shape; default that of "
                                          "the [analyzers.<name>] table")
    stability: Stability = Field("D", description="Pasquill class of the plume's spread")
    background_ppm: float = Field(2.0, ge=0, le=10_000, description="ambient mole fraction")
    noise_ppm: float = Field(0.002, ge=0, le=100, description="reading noise, 1 sigma")
    met: str | None = Field(None, description="simulated met device whose wind carries the "
                            "plume; default the first")
    wind_speed_m_s: float | None = Field(None, ge=0, le=75, description="a fixed wind instead")
    wind_direction_deg: float | None = Field(None, ge=0, lt=360, description="... from here")
    seed: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_wind(self) -> AnalyzerSim:
        if (self.wind_speed_m_s is None) != (self.wind_direction_deg is None):
            raise ValueError("give both `wind_speed_m_s` and `wind_direction_deg`, or neither")
        if self.met is not None and self.fixed_wind is not None:
            raise ValueError("give `met` or a fixed wind, not both")
        return self

    @property
    def fixed_wind(self) -> MetSim | None:
        """The fixed wind as a steady weather (no gusts, no drift), or None."""
        if self.wind_speed_m_s is None or self.wind_direction_deg is None:
            return None
        return MetSim(wind_speed_m_s=self.wind_speed_m_s, direction_deg=self.wind_direction_deg,
                      gust_m_s=0.0, direction_drift_deg_per_min=0.0)


class DutSim(_Strict):
    """`[sim.dut.<dut_id>]`: a device under test that reports each hold window's release
    over MQTT, with the errors a real one makes."""

    bias: float = Field(0.0, ge=-1, le=10, description="relative error of every rate")
    noise_kg_h: float = Field(0.0, ge=0, le=1000, description="rate noise, 1 sigma; also "
                              "the u_rate it reports")
    localization_error_m: float = Field(0.0, ge=0, le=10_000,
                                        description="reported position this far off")
    miss_probability: float = Field(0.0, ge=0, le=1, description="of missing a release")
    false_positive_probability: float = Field(0.0, ge=0, le=1,
                                              description="of reporting one on a blank")
    false_positive_kg_h: float = Field(0.1, ge=0, le=1000, description="... at this rate")
    username: str | None = Field(None, description="broker account; default [mqtt]'s")
    password: str | None = None
    seed: int | None = Field(None, ge=0)


class SimSettings(_Strict):
    """`[sim]`."""

    pace: bool = Field(True, description="answer serial lines at their real byte timing")
    seed: int | None = Field(None, ge=0, description="noise generator seed (reproducible runs)")
    mfcs: dict[str, DeviceSim] = {}
    lines: dict[str, LineSim] = {}
    gnss: dict[str, GnssSim] = {}
    met: dict[str, MetSim] = {}
    analyzers: dict[str, AnalyzerSim] = {}
    dut: dict[str, DutSim] = {}

    def device(self, name: str) -> DeviceSim:
        return self.mfcs.get(name) or DeviceSim()

    def receiver(self, name: str) -> GnssSim:
        return self.gnss.get(name) or GnssSim()

    def weather(self, name: str) -> MetSim:
        return self.met.get(name) or MetSim()

    def paced(self, line: str) -> bool:
        override = self.lines.get(line)
        return self.pace if override is None or override.pace is None else override.pace


def _unknown(table: str, kind: str, named: dict[str, object],
             defined: dict[str, object]) -> list[tuple[str, str]]:
    return [(f"sim.{table}.{name}", f"no {kind} named '{name}' "
             f"(defined: {', '.join(defined) or 'none'})")
            for name in named if name not in defined]


def _device_problems(config: StationConfig, settings: SimSettings) -> list[tuple[str, str]]:
    """What the tables cannot say alone: files to simulate, Modbus-only keys, shared ids."""
    problems = []
    for table, devices in (("gnss", config.gnss), ("met", config.met)):
        for name in getattr(settings, table):
            device = devices.get(name)
            if getattr(device, "transport", None) == "file":
                problems.append((f"sim.{table}.{name}", "reads a capture file (transport "
                                 "'file'): nothing to simulate; to replay a capture on a port, "
                                 "use `replay` with transport 'serial' or 'tcp'"))
    for name, sim in settings.met.items():
        modbus = isinstance(config.met.get(name), ModbusMetConfig)
        if modbus and "rate_hz" in sim.model_fields_set:
            problems.append((f"sim.met.{name}.rate_hz", "a Modbus anemometer answers when "
                             "polled: rate_hz applies only to protocol 'nmea'"))
    return problems


def simulated_met(config: StationConfig) -> list[str]:
    """The met devices the simulator serves (a capture file is not simulated)."""
    return [name for name, met in config.met.items()
            if getattr(met, "transport", None) != "file"]


def _plume_problems(config: StationConfig, settings: SimSettings) -> list[tuple[str, str]]:
    """Analyzers: text ones on a port, with a wind to carry the plume; DUTs: configured
    ones, and a broker to report to."""
    problems = (_unknown("analyzers", "analyzer", settings.analyzers, config.analyzers)
                + _unknown("dut", "DUT", settings.dut, config.dut))
    winds = simulated_met(config)
    for name, analyzer in settings.analyzers.items():
        table = config.analyzers.get(name)
        if table is not None and (not isinstance(table, TextAnalyzerConfig)
                                  or table.transport == "file"):
            problems.append((f"sim.analyzers.{name}", "only a text analyzer on a port "
                             "(transport 'serial' or 'tcp') is simulated"))
        if analyzer.met is not None and analyzer.met not in winds:
            problems.append((f"sim.analyzers.{name}.met", f"no simulated met device named "
                             f"'{analyzer.met}' (simulated: {', '.join(winds) or 'none'})"))
        if analyzer.fixed_wind is None and not winds:
            problems.append((f"sim.analyzers.{name}", "no wind to carry the plume: give "
                             "`wind_speed_m_s` and `wind_direction_deg`, or simulate a [met.*]"))
    if settings.dut and config.mqtt is None:
        problems.append(("sim.dut", "a simulated DUT reports over MQTT: the config has no "
                         "[mqtt] table"))
    return problems


def _resolve_replays(settings: SimSettings, base: Path) -> SimSettings:
    """Capture paths relative to `base` (the config file's folder), checked to be readable."""
    problems = []
    gnss = dict(settings.gnss)
    for name, sim in settings.gnss.items():
        if sim.replay is None:
            continue
        path = sim.replay if sim.replay.is_absolute() else base / sim.replay
        if not path.is_file():
            problems.append((f"sim.gnss.{name}.replay", f"no capture file at {path}"))
        gnss[name] = sim.model_copy(update={"replay": path})
    if problems:
        raise SimConfigError(problems)
    return settings.model_copy(update={"gnss": gnss})


def sim_settings(config: StationConfig, base: Path | None = None) -> SimSettings:
    """Validate `config.sim`, including that it names only configured devices and lines.

    Relative `replay` paths are taken from `base` (default: the current directory).
    """
    try:
        settings = SimSettings.model_validate(config.sim)
    except ValidationError as error:
        raise SimConfigError(pydantic_problems(error, prefix="sim")) from None
    problems = (
        _unknown("mfcs", "MFC", settings.mfcs, config.mfcs)
        + _unknown("lines", "line", settings.lines, config.lines)
        + _unknown("gnss", "GNSS receiver", settings.gnss, config.gnss)
        + _unknown("met", "met device", settings.met, config.met)
        + _device_problems(config, settings)
        + _plume_problems(config, settings)
    )
    if problems:
        raise SimConfigError(problems)
    return _resolve_replays(settings, base or Path.cwd())
