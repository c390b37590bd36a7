"""The tables of a station config: one pydantic model per kind of thing a station has.

Every table forbids unknown keys, so that a misspelt key is an error rather than a
silently ignored setting.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from acquisition.gas import FlowConversion, species
from drivers.analyzer import LineFormat, time_zone
from drivers.endpoint import StrictModel
from drivers.gnss import SurveyQuality
from drivers.profile import Profile, WordOrder, available_profiles, load_profile
from drivers.stream import StreamSettings

# Config tables, sequences and commands share the drivers' strict base: an unknown key is an
# error (a typo must not be ignored) and every number is finite (TOML's `inf` would pass
# `gt=0` and arm an MFC far beyond its full scale).
Strict = StrictModel


class StorageConfig(Strict):
    path: Path = Field(description="SQLite run store; relative paths are from the config file")
    max_size_mb: int | None = Field(
        None, ge=1, description="cap on the store's database file, in MiB; no key: no cap")


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

    @cached_property
    def resolved_profile(self) -> Profile:
        """The profile with this device's address and word-order overrides applied; read
        and validated once, when the config loads (see `load_config`)."""
        return load_profile(self.profile).with_overrides(self.registers, self.word_order)

    def conversion(self, gas: GasConfig) -> FlowConversion:
        """Flow to mass rate for this MFC: the gas released, the MFC's own reference
        conditions (its config, else its profile's), and the GCF if it is used."""
        profile = self.resolved_profile
        return FlowConversion(
            gas=gas.species,
            reference_temperature_c=(self.reference_temperature_c
                                     if self.reference_temperature_c is not None
                                     else profile.reference_temperature_c),
            reference_pressure_kpa=(self.reference_pressure_kpa
                                    if self.reference_pressure_kpa is not None
                                    else profile.reference_pressure_kpa),
            purity=gas.purity,
            gcf=self.gcf if self.gas_mode == "gcf" and self.gcf else 1.0)


class GnssConfig(StreamSettings):
    """A GNSS receiver's NMEA stream (serial, TCP raw NMEA port, or a capture file)."""

    baudrate: int = 115200
    fix_timeout_s: float = Field(3.0, gt=0, le=60, description="no fix this long = fix lost")


class NmeaMetConfig(StreamSettings):
    """A weather station talking NMEA 0183 (MWV wind, MDA meteorological composite)."""

    protocol: Literal["nmea"] = "nmea"
    baudrate: int = 4800


class ModbusSensorConfig(Strict):
    """A polled Modbus sensor on one of the station's Modbus lines, read by its profile."""

    protocol: Literal["modbus"]
    line: str
    unit_id: int = Field(ge=1, le=247)
    profile: str
    registers: dict[str, int] = Field({}, description="register address overrides")
    word_order: WordOrder | None = None

    @cached_property
    def resolved_profile(self) -> Profile:
        return load_profile(self.profile).with_overrides(self.registers, self.word_order)


class ModbusMetConfig(ModbusSensorConfig):
    """A Modbus weather sensor (anemometer)."""

    profile: str = "anemometer"


def _by_protocol(default: str, other: str) -> Discriminator:
    """Picks a table's model by its `protocol`: `default` if it says none, so that it may
    be left out."""

    def protocol(table: object) -> str:
        if isinstance(table, dict):
            return str(table.get("protocol", default))
        return str(getattr(table, "protocol", default))

    return Discriminator(protocol, custom_error_type="protocol", custom_error_message=(
        f"`protocol` must be '{default}' (the default) or '{other}'"))


MetConfig = Annotated[
    Annotated[NmeaMetConfig, Tag("nmea")] | Annotated[ModbusMetConfig, Tag("modbus")],
    _by_protocol("nmea", "modbus"),
]


class TextAnalyzerConfig(StreamSettings, LineFormat):
    """A gas analyzer printing text lines (serial, TCP or a capture file), read as
    `format` says: one sample a configured channel and line."""

    protocol: Literal["text"] = "text"


class ModbusAnalyzerConfig(ModbusSensorConfig):
    """A gas analyzer polled over Modbus like the met sensors; its profile gives the units."""

    profile: str = "gas_analyzer"


AnalyzerConfig = Annotated[
    Annotated[TextAnalyzerConfig, Tag("text")] | Annotated[ModbusAnalyzerConfig, Tag("modbus")],
    _by_protocol("text", "modbus"),
]


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
    resume_after_s: float = Field(
        30.0, ge=0, le=3600,
        description="a run paused by an interlock resumes once it has been clear this long; "
                    "0: only an operator resumes")
    position_wait_s: float = Field(
        120.0, ge=0, le=3600, description="wait this long for a GNSS-surveyed point's position")
    safe_retry_s: float = Field(
        0.5, gt=0, le=60, description="retry a device not confirmed safe this often")
    safe_wait_s: float = Field(
        120.0, ge=0, le=3600,
        description="`crf run` and a stopping daemon keep retrying devices not confirmed "
                    "safe this long before they give up with an error")


class MqttTls(Strict):
    ca: Path | None = Field(None, description="CA certificate that signed the broker's")
    cert: Path | None = Field(None, description="client certificate, if the broker asks")
    key: Path | None = None
    insecure: bool = Field(False, description="skip hostname check (test brokers only)")


class MqttConfig(Strict):
    """The site broker: where, who we are, and how often we publish."""

    url: str = Field("mqtt://127.0.0.1:1883", pattern=r"^mqtts?://[^/:]+(:\d+)?/?$",
                     description="mqtt://host:port, or mqtts:// for TLS")
    username: str | None = None
    password: str | None = None
    password_file: Path | None = Field(None, description="read the password from this file")
    client_id: str | None = Field(None, description="default crf-<station>")
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = Field(30, ge=5, le=600)
    tls: MqttTls | None = None
    telemetry_interval_s: float = Field(1.0, ge=0.05, le=60, description="per device")
    state_interval_s: float = Field(1.0, ge=0.1, le=60)
    status_interval_s: float = Field(
        10.0, ge=0.5, le=600, description="retained status with the health counters")
    command_ttl_s: float = Field(30.0, gt=0, le=3600, description="older commands refused")
    max_clock_skew_s: float = Field(5.0, ge=0, le=600, description="commands from the future")
    publish_truth: bool = Field(
        False, description="in blind runs, truth also goes to crf/<station>/truth/# (ACL!)")
    reconnect_min_s: float = Field(0.5, gt=0, le=60)
    reconnect_max_s: float = Field(30.0, gt=0, le=600)

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].rstrip("/").split(":")[0]

    @property
    def port(self) -> int:
        rest = self.url.split("://", 1)[1].rstrip("/")
        return int(rest.split(":")[1]) if ":" in rest else (
            8883 if self.url.startswith("mqtts") else 1883)

    def secret(self) -> str | None:
        if self.password_file is not None:
            return self.password_file.read_text(encoding="utf-8").strip()
        return self.password


class ConditionRange(Strict):
    """The allowed range of one calibration condition; an end left out is no limit."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ConditionRange:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class ConditionLimits(Strict):
    """The calibration conditions (the specification's section 6) every step's hold is
    checked against on the certificate, and the weather device that measures them."""

    device: str | None = Field(
        None, description="the [met.*] device that gives the conditions; default: the "
                          "station's only met device")
    temperature_c: ConditionRange = ConditionRange()
    pressure_kpa: ConditionRange = ConditionRange()
    wind_speed_m_s: ConditionRange = ConditionRange()
    wind_sector_deg: tuple[float, float] | None = Field(
        None, description="allowed directions the wind blows from: clockwise from the "
                          "first to the second, degrees true; no key: any direction")

    @field_validator("wind_sector_deg")
    @classmethod
    def _degrees(cls, sector: tuple[float, float] | None) -> tuple[float, float] | None:
        if sector is not None and not all(0 <= end <= 360 for end in sector):
            raise ValueError("both ends of the sector are directions from 0 to 360 degrees")
        return sector


class CertificateConfig(Strict):
    """What the calibration certificate says of the issuing laboratory and the standard;
    every key has a default, so a station without the table still gets a report."""

    laboratory: str = Field("", description="the issuing body's name")
    address: str = ""
    standard_name: str | None = Field(
        None, description="the standard used; default: the Controlled Release Facility, "
                          "in the report's language(s)")
    specification: str | None = Field(
        None, description="the technical document calibrated against; default: the "
                          "calibration specification of GHG fugitive-emission monitoring "
                          "systems, in the report's language(s)")
    recalibration_interval_months: int = Field(
        12, ge=1, le=120, description="the recommended re-calibration interval, at most")
    conditions: ConditionLimits = ConditionLimits()


# A DUT's id names MQTT topics and store rows: letters, digits, `_`, `.` and `-` only.
DUT_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
# The fields of a DUT report, which are also the default column headers of its CSV files.
DUT_REPORT_FIELDS = ("dut_id", "t", "window_start", "window_end", "rate", "unit", "u_rate",
                     "lat", "lon", "detected")


class DutConfig(Strict):
    """A monitoring system under test (DUT): how its reports are matched to the steps, and
    how its CSV files are read."""

    reporting_delay_s: float = Field(
        0.0, ge=0, le=86_400,
        description="the DUT reports this long after the release it measured: each step's "
                    "hold window is shifted by it before reports are matched")
    min_overlap: float = Field(
        0.5, ge=0, le=1,
        description="a window report matches a step whose hold it overlaps by at least "
                    "this fraction of the report's window")
    wind_run_m: float | None = Field(
        None, gt=0, le=1_000_000,
        description="a report counts only once the wind has run this far since the step "
                    "started; no key: no such rule")
    wind_device: str | None = Field(
        None, description="the [met.*] device whose wind_speed gives the wind run")
    columns: dict[str, str] = Field(
        {}, description="CSV columns: report field -> the DUT's column header")
    timezone: str = Field("UTC", description="IANA zone of CSV times given without an offset")

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, columns: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(columns) - set(DUT_REPORT_FIELDS))
        if unknown:
            raise ValueError(f"unknown report field(s) {', '.join(unknown)} (fields: "
                             f"{', '.join(DUT_REPORT_FIELDS)})")
        headers = [columns.get(field, field).strip() for field in DUT_REPORT_FIELDS]
        if "" in headers or len(set(headers)) < len(headers):
            raise ValueError("every field needs a column header of its own (a field not "
                             "renamed keeps its name as its header)")
        return columns

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        time_zone(value)  # ValueError naming the zone
        return value

    @model_validator(mode="after")
    def _wind_source(self) -> DutConfig:
        if self.wind_run_m is not None and self.wind_device is None:
            raise ValueError("wind_run_m needs `wind_device`: the met device whose "
                             "wind_speed is integrated")
        return self
