"""Station configuration: TOML validated by pydantic, with errors that name file, key and fix.

Everything a station needs is in one file: where to store, how each serial line or
TCP gateway is set up, and which MFCs sit on which line.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from drivers.modbus_line import LineSettings
from drivers.profile import Profile, WordOrder, available_profiles, load_profile


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


class StationConfig(Strict):
    station: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    storage: StorageConfig
    acquisition: AcquisitionConfig = AcquisitionConfig()
    lines: dict[str, LineSettings] = Field(min_length=1)
    mfcs: dict[str, MfcConfig] = {}
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
        try:
            mfc.resolved_profile()
        except (ValueError, OSError) as exc:
            problems.append((f"mfcs.{name}.profile", str(exc)))
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
    storage = config.storage.path
    if not storage.is_absolute():
        storage = (path.parent / storage).resolve()
    return config.model_copy(update={"storage": StorageConfig(path=storage)})


def config_hash(config: StationConfig) -> str:
    """A short stable fingerprint of the validated config, recorded with every run."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]
