"""Station configuration: TOML validated by pydantic, with errors that name file, key and fix.

Everything a station needs is in one file: where to store, how each serial line or
TCP gateway is set up, and which MFCs sit on which line.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from acquisition.config.tables import (
    DUT_ID_PATTERN,
    AcquisitionConfig,
    AnalyzerConfig,
    CertificateConfig,
    ClockConfig,
    DutConfig,
    GasConfig,
    GnssConfig,
    MetConfig,
    MfcConfig,
    ModbusAnalyzerConfig,
    ModbusMetConfig,
    ModbusSensorConfig,
    MqttConfig,
    ReleasePointConfig,
    SafetyConfig,
    StorageConfig,
    Strict,
    ValveConfig,
)
from acquisition.gas import FlowConversion, to_kg_h
from drivers.modbus_line import LineSettings


class StationConfig(Strict):
    """A whole station file. Unknown keys and numbers that are not finite are errors."""

    station: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    storage: StorageConfig
    acquisition: AcquisitionConfig = AcquisitionConfig()
    lines: dict[str, LineSettings] = Field(default_factory=dict)
    mfcs: dict[str, MfcConfig] = Field(default_factory=dict)
    gnss: dict[str, GnssConfig] = Field(default_factory=dict)
    met: dict[str, MetConfig] = Field(default_factory=dict)
    analyzers: dict[str, AnalyzerConfig] = Field(default_factory=dict)
    release_points: dict[str, ReleasePointConfig] = Field(default_factory=dict)
    clock: ClockConfig = ClockConfig()
    gas: GasConfig = GasConfig()
    valves: dict[str, ValveConfig] = Field(default_factory=dict)
    safety: SafetyConfig = SafetyConfig()
    dut: dict[str, DutConfig] = Field(
        default_factory=dict, description="monitoring systems under test, by DUT id")
    mqtt: MqttConfig | None = Field(None, description="no table: no MQTT")
    certificate: CertificateConfig = Field(
        CertificateConfig(), description="what the calibration certificate states")
    sequences_dir: Path = Field(Path("sequences"),
                                description="sequence files; relative to the config file")
    sim: dict[str, Any] = Field(default_factory=dict,
                                description="settings read only by `crf sim`")

    @cached_property
    def conversions(self) -> dict[str, FlowConversion]:
        """Each MFC's flow-to-mass conversion, resolved once (see `load_config`)."""
        return {name: mfc.conversion(self.gas) for name, mfc in self.mfcs.items()}

    def conversion(self, mfc: str) -> FlowConversion:
        return self.conversions[mfc]


class ConfigError(Exception):
    """A config file that cannot be used; `problems` are (key path, message) pairs."""

    def __init__(self, path: Path, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        lines = [f"{path}: {key}: {message}" if key else f"{path}: {message}"
                 for key, message in problems]
        super().__init__("\n".join(lines))


# pydantic puts the tag of a tagged union in an error's path: a met table's protocol is
# no key of the file, so `met.ws.nmea.baudrate` is shown as `met.ws.baudrate`.
UNION_TAGS = {"met": {"nmea", "modbus"}, "analyzers": {"text", "modbus"}}


def _key_parts(loc: tuple[int | str, ...]) -> list[str]:
    parts = [str(part) for part in loc]
    if len(parts) > 2 and parts[2] in UNION_TAGS.get(parts[0], set()):
        del parts[2]
    return parts


def pydantic_problems(error: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """(key path, message) pairs from a pydantic error, worded for people editing TOML."""
    problems = []
    for item in error.errors():
        parts = _key_parts(item["loc"])
        key = ".".join([prefix, *parts] if prefix else parts)
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
    key: str, device: MfcConfig | ModbusSensorConfig, kind: str
) -> list[tuple[str, str]]:
    try:
        profile = device.resolved_profile
    except (ValueError, OSError) as exc:
        return [(key, str(exc))]
    if profile.kind != kind:
        return [(key, f"profile '{profile.name}' is for a {profile.kind}, not a {kind}")]
    return []


# The tables that may hold polled Modbus sensors: their settings, the profile kind needed.
MODBUS_SENSORS: dict[str, tuple[type[ModbusSensorConfig], str]] = {
    "met": (ModbusMetConfig, "anemometer"),
    "analyzers": (ModbusAnalyzerConfig, "gas_analyzer"),
}


def modbus_sensors(config: StationConfig) -> list[tuple[str, str, ModbusSensorConfig]]:
    """(table, name, settings) of every polled Modbus sensor: met sensors, gas analyzers."""
    return [(table, name, sensor) for table, (settings, _) in MODBUS_SENSORS.items()
            for name, sensor in getattr(config, table).items() if isinstance(sensor, settings)]


def _name_clashes(config: StationConfig) -> list[tuple[str, str]]:
    """One name for two devices: their samples would be recorded as one device's."""
    problems, seen = [], {}
    for table in ("mfcs", "gnss", "met", "analyzers"):
        for name in getattr(config, table):
            if name in seen:
                problems.append((f"{table}.{name}", f"the name '{name}' is already used by "
                                 f"{seen[name]}.{name}"))
            seen.setdefault(name, table)
    return problems


def _unit_id_clashes(config: StationConfig) -> list[tuple[str, str]]:
    """Two Modbus devices at one address on one line. Valves may share a relay module."""
    devices = [(f"mfcs.{name}", mfc.line, mfc.unit_id) for name, mfc in config.mfcs.items()]
    devices += [(f"{table}.{name}", sensor.line, sensor.unit_id)
                for table, name, sensor in modbus_sensors(config)]
    relays = {(valve.line, valve.unit_id): f"valves.{name}"
              for name, valve in config.valves.items()}
    devices += [(key, line, unit) for (line, unit), key in relays.items()]
    problems, seen = [], {}
    for key, line, unit in devices:
        if (line, unit) in seen:
            problems.append((f"{key}.unit_id", f"unit id {unit} is already used by "
                             f"{seen[(line, unit)]} on line '{line}'"))
        seen.setdefault((line, unit), key)
    return problems


def _dut_problems(config: StationConfig) -> list[tuple[str, str]]:
    """DUT ids usable in topics and rows; a wind run measured by a met device we have."""
    problems = []
    for name, dut in config.dut.items():
        if not re.fullmatch(DUT_ID_PATTERN, name):
            problems.append((f"dut.{name}", "a DUT id is 1-64 letters, digits, '_', '.' "
                             "or '-'"))
        if dut.wind_device is not None and dut.wind_device not in config.met:
            problems.append((f"dut.{name}.wind_device", f"no met device named "
                             f"'{dut.wind_device}' (defined: {', '.join(config.met) or 'none'})"))
    return problems


def _cross_check(config: StationConfig) -> list[tuple[str, str]]:
    """Rules that span tables: line references, shared unit ids, profile overrides."""
    problems: list[tuple[str, str]] = []
    problems += _unit_id_clashes(config)
    for name, mfc in config.mfcs.items():
        if mfc.line not in config.lines:
            problems.append(
                (f"mfcs.{name}.line", f"no line named '{mfc.line}' "
                 f"(defined: {', '.join(config.lines)})")
            )
        if mfc.gas_mode == "gcf" and mfc.gcf is None:
            problems.append((f"mfcs.{name}.gcf", "gas_mode = 'gcf' needs a `gcf` value"))
        problems += _profile_problems(f"mfcs.{name}.profile", mfc, "mfc")
    for table, name, sensor in modbus_sensors(config):
        if sensor.line not in config.lines:
            problems.append((f"{table}.{name}.line", f"no line named '{sensor.line}'"))
        problems += _profile_problems(f"{table}.{name}.profile", sensor,
                                      MODBUS_SENSORS[table][1])
    problems += _name_clashes(config)
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
    problems += _dut_problems(config)
    conditions_device = config.certificate.conditions.device
    if conditions_device is not None and conditions_device not in config.met:
        problems.append(("certificate.conditions.device", f"no met device named "
                         f"'{conditions_device}' (defined: {', '.join(config.met) or 'none'})"))
    if config.clock.reference and config.clock.reference not in config.gnss:
        problems.append(("clock.reference",
                         f"no GNSS receiver named '{config.clock.reference}'"))
    return problems


def read_toml(path: Path, missing: str = "file not found") -> dict[str, Any]:
    """A TOML file's tables; ConfigError (naming the file) if absent or not TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, [("", missing)]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [("", f"not valid TOML: {exc}")]) from None


def load_config(path: str | Path) -> StationConfig:
    """Read and validate a station file; raise ConfigError naming every problem found."""
    path = Path(path)
    raw = read_toml(path)
    try:
        config = StationConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(path, pydantic_problems(exc)) from None
    problems = _cross_check(config)
    if problems:
        raise ConfigError(path, problems)
    config = config.model_copy(update={
        "storage": config.storage.model_copy(update={
            "path": _beside(path, config.storage.path)}),
        "sequences_dir": _beside(path, config.sequences_dir),
    })
    _ = config.conversions  # profiles and conversions resolved now, not on the hot path
    return config


def _beside(config_path: Path, path: Path) -> Path:
    return path if path.is_absolute() else (config_path.parent / path).resolve()


def config_hash(config: StationConfig) -> str:
    """A short stable fingerprint of the validated config, recorded with every run."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]
