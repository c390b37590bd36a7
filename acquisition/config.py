"""Station configuration: TOML validated by pydantic, with errors that name file, key and fix.

Everything a station needs is in one file: where to store, how each serial line or
TCP gateway is set up, and which MFCs sit on which line.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from acquisition.gas import species, to_kg_h
from drivers.gnss import SurveyQuality
from drivers.modbus_line import LineSettings
from drivers.profile import Profile, WordOrder, available_profiles, load_profile
from drivers.stream import StreamSettings


class Strict(BaseModel):
    """Base for config tables: an unknown key is an error (a typo must not be ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(Strict):
    path: Path = Field(description="SQLite run store; relative paths are from the config file")


class AcquisitionConfig(Strict):
    sample_rate_hz: float = Field(2.0, gt=0, le=100, description="MFC polls per second")
    commit_interval_s: float = Field(1.0, gt=0, le=60, description="sample batch period")
    zero_timeout_s: float = Field(2.0, gt=0, le=30, description="per device, when zeroing")


class MfcConfig(Strict):
    """One mass flow controller, addressed by unit id on a named line."""

    line: str
    unit_id: int = Field(ge=1, le=247, description="Modbus slave address")
    profile: str = Field(description="shipped profile name or path to a profile TOML")
    full_scale: float = Field(gt=0, description="in the profile's flow unit")
    gas: str = "CH4"
    gas_mode: Literal["actual", "gcf"] = Field(
        "actual", description="actual: device set to the released gas; gcf: apply `gcf`"
    )
    gcf: float | None = Field(None, gt=0, le=10, description="gas conversion factor")
    reference_temperature_c: float | None = Field(None, ge=-50, le=50)
    reference_pressure_kpa: float | None = Field(None, gt=50, le=200)
    registers: dict[str, int] = Field({}, description="register address overrides")
    word_order: WordOrder | None = None
    model: str | None = None
    serial_number: str | None = None
    firmware: str | None = None
    certificate_id: str | None = None
    # Uncertainty inputs (JJF 1059.1): the certificate's expanded relative uncertainty and
    # its coverage factor; the maker's accuracy spec (used where readings are uncorrected).
    certificate_u_pct: float | None = Field(None, gt=0, le=20, description="U, % of reading")
    certificate_k: float = Field(2.0, gt=0, le=5)
    accuracy_pct_reading: float = Field(0.8, ge=0, le=20, description="spec, % of reading")
    accuracy_pct_fs: float = Field(0.2, ge=0, le=20, description="spec, % of full scale")
    gcf_u_pct: float = Field(2.0, ge=0, le=20, description="standard u of the GCF, %")
    calibration: list[tuple[float, float]] = Field(
        [], description="certificate pairs [indicated, reference] in the flow unit")
    accurate_span: tuple[float, float] = Field(
        (0.1, 1.0), description="fraction of full scale where the spec holds")

    @field_validator("calibration")
    @classmethod
    def _increasing(cls, pairs: list[tuple[float, float]]) -> list[tuple[float, float]]:
        indicated = [pair[0] for pair in pairs]
        if pairs and (len(pairs) < 2 or indicated != sorted(set(indicated))):
            raise ValueError("give at least two [indicated, reference] pairs, "
                             "indicated strictly increasing")
        return pairs

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        if not value.endswith(".toml") and value not in available_profiles():
            raise ValueError(
                f"unknown profile '{value}'; shipped profiles: {', '.join(available_profiles())}"
            )
        return value

    def resolved_profile(self) -> Profile:
        """The profile with this device's address and word-order overrides applied."""
        return load_profile(self.profile).with_overrides(self.registers, self.word_order)


class GnssConfig(StreamSettings):
    """A GNSS receiver's NMEA stream (serial, TCP raw NMEA port, or a capture file)."""

    baudrate: int = 115200
    fix_timeout_s: float = Field(3.0, gt=0, le=60, description="no fix this long = fix lost")


class NmeaMetConfig(StreamSettings):
    """A weather station talking NMEA 0183 (MWV wind, MDA meteorological composite)."""

    protocol: Literal["nmea"] = "nmea"
    baudrate: int = 4800


class ModbusMetConfig(Strict):
    """A Modbus weather sensor (anemometer) on one of the station's Modbus lines."""

    protocol: Literal["modbus"]
    line: str
    unit_id: int = Field(ge=1, le=247)
    profile: str = "anemometer"
    registers: dict[str, int] = Field({}, description="register address overrides")
    word_order: WordOrder | None = None

    def resolved_profile(self) -> Profile:
        return load_profile(self.profile).with_overrides(self.registers, self.word_order)


MetConfig = Annotated[NmeaMetConfig | ModbusMetConfig, Field(discriminator="protocol")]


class SurveyConfig(Strict):
    """Locate a release point from a GNSS receiver's fixes of sufficient quality."""

    receiver: str = Field(description="name of a [gnss.*] receiver at the point")
    min_quality: SurveyQuality = "rtk_fixed"
    window_s: float = Field(60.0, gt=0, le=86_400, description="average over the last ...")
    min_fixes: int = Field(30, ge=1, description="fixes needed before the position is used")


class ReleasePointConfig(Strict):
    """Where gas is released: surveyed coordinates (WGS-84) or a GNSS survey; its MFCs."""

    mfcs: list[str] = Field([], description="MFCs that feed this point, any full scales")
    valve: str | None = Field(None, description="normally-closed shutoff valve of the point")
    max_rate: float | None = Field(None, gt=0, description="never release more than this")
    max_rate_unit: str = "kg/h"

    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)
    altitude_m: float | None = Field(None, ge=-500, le=9000)
    horizontal_uncertainty_m: float = Field(
        0.0, ge=0, description="of surveyed coordinates (1 sigma), from the survey record")
    survey: SurveyConfig | None = None
    description: str = ""

    @model_validator(mode="after")
    def _one_source(self) -> ReleasePointConfig:
        surveyed = self.latitude is not None and self.longitude is not None
        if surveyed == (self.survey is not None):
            raise ValueError("give either `latitude` and `longitude` (surveyed) or a "
                             "`survey` table (from a GNSS receiver), not both or neither")
        return self


class ClockConfig(Strict):
    """Host clock against GNSS time: which receiver to trust and how far apart is too far."""

    reference: str | None = Field(None, description="GNSS receiver; default the first")
    max_offset_s: float = Field(0.5, gt=0, le=3600)


class GasConfig(Strict):
    """The gas in the cylinder: species released and its mole fraction (purity)."""

    species: str = "CH4"
    purity: float = Field(1.0, gt=0, le=1, description="mole fraction of the species")
    purity_u: float = Field(0.0, ge=0, le=0.1, description="standard uncertainty of purity")
    reference_u_pct: float = Field(
        0.05, ge=0, le=5, description="standard u of reference conditions / compressibility")

    @field_validator("species")
    @classmethod
    def _known(cls, value: str) -> str:
        species(value)
        return value


class ValveConfig(Strict):
    """A normally-closed solenoid on a Modbus relay output (coil)."""

    line: str
    unit_id: int = Field(ge=1, le=247)
    coil: int = Field(0, ge=0, le=0xFFFF)


class Interlock(Strict):
    action: Literal["pause", "abort"] = "abort"


class CommLossInterlock(Interlock):
    after_s: float = Field(5.0, gt=0, le=600, description="no good MFC reading this long")


class ThresholdInterlock(Interlock):
    """A sampled channel that must stay within [min, max] while gas flows."""

    device: str
    channel: str
    min: float | None = None
    max: float | None = None
    stale_after_s: float = Field(10.0, gt=0, description="no reading this long = tripped")


class SafetyConfig(Strict):
    comm_loss: CommLossInterlock = CommLossInterlock()
    supply_pressure: ThresholdInterlock | None = None
    wind: ThresholdInterlock | None = None
    gnss_fix_action: Literal["pause", "abort", "ignore"] = "pause"
    max_manual_duration_s: float = Field(600.0, gt=0, le=86_400)
    check_period_s: float = Field(0.5, gt=0, le=10)


class StationConfig(Strict):
    station: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    storage: StorageConfig
    acquisition: AcquisitionConfig = AcquisitionConfig()
    lines: dict[str, LineSettings] = {}
    mfcs: dict[str, MfcConfig] = {}
    gnss: dict[str, GnssConfig] = {}
    met: dict[str, MetConfig] = {}
    release_points: dict[str, ReleasePointConfig] = {}
    clock: ClockConfig = ClockConfig()
    gas: GasConfig = GasConfig()
    valves: dict[str, ValveConfig] = {}
    safety: SafetyConfig = SafetyConfig()
    sequences_dir: Path = Field(Path("sequences"),
                                description="sequence files; relative to the config file")
    sim: dict[str, Any] = Field({}, description="settings read only by `crf sim`")


class ConfigError(Exception):
    """A config file that cannot be used; `problems` are (key path, message) pairs."""

    def __init__(self, path: Path, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        lines = [f"{path}: {key}: {message}" if key else f"{path}: {message}"
                 for key, message in problems]
        super().__init__("\n".join(lines))


def pydantic_problems(error: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """(key path, message) pairs from a pydantic error, worded for people editing TOML."""
    problems = []
    for item in error.errors():
        key = ".".join([prefix, *(str(part) for part in item["loc"])] if prefix
                       else [str(part) for part in item["loc"]])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check spelling; see config/station.example.toml)"
        elif item["type"] != "missing" and "input" in item and not isinstance(
            item["input"], dict | list
        ):
            message += f" (got {item['input']!r})"
        problems.append((key, message))
    return problems


def _profile_problems(
    key: str, device: MfcConfig | ModbusMetConfig, kind: str
) -> list[tuple[str, str]]:
    try:
        profile = device.resolved_profile()
    except (ValueError, OSError) as exc:
        return [(key, str(exc))]
    if profile.kind != kind:
        return [(key, f"profile '{profile.name}' is for a {profile.kind}, not a {kind}")]
    return []


def _cross_check(config: StationConfig) -> list[tuple[str, str]]:
    """Rules that span tables: line references, shared unit ids, profile overrides."""
    problems: list[tuple[str, str]] = []
    seen: dict[tuple[str, int], str] = {}
    for name, mfc in config.mfcs.items():
        if mfc.line not in config.lines:
            problems.append(
                (f"mfcs.{name}.line", f"no line named '{mfc.line}' "
                 f"(defined: {', '.join(config.lines)})")
            )
        key = (mfc.line, mfc.unit_id)
        if key in seen:
            problems.append(
                (f"mfcs.{name}.unit_id", f"unit id {mfc.unit_id} is already used by "
                 f"mfcs.{seen[key]} on line '{mfc.line}'")
            )
        seen.setdefault(key, name)
        if mfc.gas_mode == "gcf" and mfc.gcf is None:
            problems.append((f"mfcs.{name}.gcf", "gas_mode = 'gcf' needs a `gcf` value"))
        problems += _profile_problems(f"mfcs.{name}.profile", mfc, "mfc")
    for name, met in config.met.items():
        if isinstance(met, ModbusMetConfig):
            if met.line not in config.lines:
                problems.append((f"met.{name}.line", f"no line named '{met.line}'"))
            problems += _profile_problems(f"met.{name}.profile", met, "anemometer")
    for name, point in config.release_points.items():
        if point.survey and point.survey.receiver not in config.gnss:
            problems.append((f"release_points.{name}.survey.receiver",
                             f"no GNSS receiver named '{point.survey.receiver}' "
                             f"(defined: {', '.join(config.gnss) or 'none'})"))
    for name, point in config.release_points.items():
        for mfc in point.mfcs:
            if mfc not in config.mfcs:
                problems.append((f"release_points.{name}.mfcs", f"no MFC named '{mfc}'"))
        if point.valve and point.valve not in config.valves:
            problems.append((f"release_points.{name}.valve", f"no valve named '{point.valve}'"))
        if point.max_rate is not None:
            try:
                to_kg_h(point.max_rate, point.max_rate_unit, config.gas.species)
            except ValueError as error:
                problems.append((f"release_points.{name}.max_rate_unit", str(error)))
    for name, valve in config.valves.items():
        if valve.line not in config.lines:
            problems.append((f"valves.{name}.line", f"no line named '{valve.line}'"))
    for key, interlock in (("supply_pressure", config.safety.supply_pressure),
                           ("wind", config.safety.wind)):
        known = {*config.mfcs, *config.met}
        if interlock and interlock.device not in known:
            problems.append((f"safety.{key}.device", f"no MFC or met device named "
                             f"'{interlock.device}'"))
    if config.clock.reference and config.clock.reference not in config.gnss:
        problems.append(("clock.reference",
                         f"no GNSS receiver named '{config.clock.reference}'"))
    return problems


def load_config(path: str | Path) -> StationConfig:
    """Read and validate a station file; raise ConfigError naming every problem found."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, [("", "file not found")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [("", f"not valid TOML: {exc}")]) from None
    try:
        config = StationConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(path, pydantic_problems(exc)) from None
    problems = _cross_check(config)
    if problems:
        raise ConfigError(path, problems)
    return config.model_copy(update={
        "storage": StorageConfig(path=_beside(path, config.storage.path)),
        "sequences_dir": _beside(path, config.sequences_dir),
    })


def _beside(config_path: Path, path: Path) -> Path:
    return path if path.is_absolute() else (config_path.parent / path).resolve()


def config_hash(config: StationConfig) -> str:
    """A short stable fingerprint of the validated config, recorded with every run."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]
