"""One report of a DUT: an emission rate, optionally where, at a time or over a window.

A report arrives as JSON (live, over MQTT) or as a CSV row (imported). Both go through
`ReportPayload`, so that a file and a live message are held to the same rules; the result
is a `DutReport` with UTC nanosecond times and the rate as kg/h of the station's species.
A time without a UTC offset is refused here: only a CSV file, whose DUT has a configured
time zone, may leave the offset out (the importer adds it before validation).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from acquisition.config.tables import DUT_ID_PATTERN, DUT_REPORT_FIELDS, Strict
from acquisition.gas import RATE_UNITS, to_kg_h
from acquisition.json_guard import PayloadError, check_values, parse_json

MAX_REPORT_BYTES = 16_384  # a report is a dozen fields
MAX_REPORT_DEPTH = 4  # a report is one flat object; a little room for a clear refusal
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Report times outside these bounds are a mistake (epoch milliseconds, a wrong year).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


class ReportError(PayloadError):
    """A report refused: `code` (`bad_json`, `bad_report`, `unknown_unit`, `too_large`,
    `too_deep`, `not_finite`) and a message naming the field."""


def _time(value: object) -> datetime:
    """ISO 8601 text with its UTC offset, epoch seconds, or an aware datetime."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not EARLIEST.timestamp() <= value < LATEST.timestamp():
            raise ValueError("epoch seconds must fall between 2000 and 2100 (milliseconds?)")
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("not an ISO 8601 time or epoch seconds") from None
    if not isinstance(value, datetime):
        raise ValueError("a time is ISO 8601 text with its UTC offset, or epoch seconds")
    if value.utcoffset() is None:
        raise ValueError("an ISO 8601 time needs its UTC offset (e.g. Z or +08:00)")
    if not EARLIEST <= value < LATEST:
        raise ValueError("a report time must fall between 2000 and 2100")
    return value


Time = Annotated[datetime, BeforeValidator(_time)]


class ReportPayload(Strict):
    """A report as sent. Numbers must be JSON numbers (strict: "1.5" is refused)."""

    dut_id: str = Field(description="letters, digits, _ . - (1-64)")
    t: Time | None = Field(None, description="the time the estimate is for")
    window_start: Time | None = Field(None, description="or the window it averaged over")
    window_end: Time | None = None
    rate: float = Field(ge=0, strict=True, description="emission rate, in `unit`")
    unit: str = Field(description="a rate unit: kg/h, g/h, g/min, g/s, kg/d, SLPM, ...")
    u_rate: float | None = Field(None, ge=0, strict=True, description="its uncertainty, in `unit`")
    lat: float | None = Field(None, ge=-90, le=90, strict=True, description="WGS-84 degrees")
    lon: float | None = Field(None, ge=-180, le=180, strict=True)
    detected: bool = Field(True, strict=True, description='false: an explicit "no emission"')

    @field_validator("dut_id")
    @classmethod
    def _usable_id(cls, value: str) -> str:
        if not re.fullmatch(DUT_ID_PATTERN, value):
            raise ValueError("a DUT id is 1-64 letters, digits, '_', '.' or '-'")
        return value

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, value: str) -> str:
        if value not in RATE_UNITS:
            raise PydanticCustomError("unknown_unit", "unknown rate unit '{unit}' (use one of "
                                      "{units})", {"unit": value, "units": ", ".join(RATE_UNITS)})
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ReportPayload:
        start, end = self.window_start, self.window_end
        if (self.t is None) == (start is None and end is None):
            raise ValueError("give either `t` or `window_start` and `window_end`")
        if self.t is None:
            if start is None or end is None:
                raise ValueError(f"{'window_end' if end is None else 'window_start'}: a "
                                 "window needs both `window_start` and `window_end`")
            if end <= start:
                raise ValueError("window_end: must be after window_start")
        if (self.lat is None) != (self.lon is None):
            raise ValueError(f"{'lon' if self.lon is None else 'lat'}: give both `lat` and "
                             "`lon`, or neither")
        return self


def _ns(when: datetime) -> int:
    return (when - EPOCH) // timedelta(microseconds=1) * 1000


@dataclass(frozen=True)
class DutReport:
    """A validated report: UTC nanosecond times, the rate also as kg/h of the species."""

    dut_id: str
    t_ns: int  # the report's time, or its window's middle
    window_start_ns: int | None
    window_end_ns: int | None
    rate: float
    unit: str
    rate_kg_h: float
    u_rate: float | None
    lat: float | None
    lon: float | None
    detected: bool


def _problems(error: ValidationError) -> str:
    """Every problem of a report, each with the field it is about."""
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = f"unknown field (fields: {', '.join(DUT_REPORT_FIELDS)})"
        elif (item["type"] not in ("missing", "unknown_unit")
              and not isinstance(item.get("input"), dict | list)):
            message += f" (got {item['input']!r})"
        problems.append(f"{key}: {message}" if key else message)
    return "; ".join(problems)


def build_report(fields: Mapping[str, Any], species: str) -> DutReport:
    """A report from its fields (JSON values, or CSV cells already made numbers and times);
    ReportError naming every problem."""
    try:
        payload = ReportPayload.model_validate(fields)
    except ValidationError as error:
        unit = any(item["type"] == "unknown_unit" for item in error.errors())
        raise ReportError("unknown_unit" if unit else "bad_report", _problems(error)) from None
    start, end = payload.window_start, payload.window_end
    if payload.t is not None:
        t_ns, start_ns, end_ns = _ns(payload.t), None, None
    else:
        assert start is not None and end is not None  # _consistent saw to it
        start_ns, end_ns = _ns(start), _ns(end)
        t_ns = (start_ns + end_ns) // 2
    return DutReport(
        dut_id=payload.dut_id, t_ns=t_ns, window_start_ns=start_ns, window_end_ns=end_ns,
        rate=payload.rate, unit=payload.unit,
        rate_kg_h=to_kg_h(payload.rate, payload.unit, species),
        u_rate=payload.u_rate, lat=payload.lat, lon=payload.lon, detected=payload.detected)


def validate_report(payload: bytes | str, dut_id_from_topic: str, species: str) -> DutReport:
    """A live report (JSON) from the DUT whose topic it came on; its `dut_id`, if given,
    must be that DUT's. ReportError with a code and a message naming the field."""
    try:
        raw = parse_json(payload, MAX_REPORT_BYTES, MAX_REPORT_DEPTH, "a report")
        check_values(raw, "", "a report")
    except PayloadError as error:
        raise ReportError(error.code, error.message) from None
    if not isinstance(raw, dict):
        raise ReportError("bad_report", "a report is a JSON object with `rate`, `unit` and "
                                        "`t` (or `window_start` and `window_end`)")
    if raw.setdefault("dut_id", dut_id_from_topic) != dut_id_from_topic:
        raise ReportError("bad_report", f"dut_id: {raw['dut_id']!r} is not the DUT of the "
                                        f"topic ({dut_id_from_topic!r})")
    return build_report(raw, species)


def report_row(report: DutReport, run_id: str | None, received_ns: int,
               source: Literal["mqtt", "import"], raw: bytes | str) -> dict[str, Any]:
    """The `dut_reports` row of a report (without `import_key`, which only imports have)."""
    return {
        "run_id": run_id, "dut_id": report.dut_id, "source": source,
        "received_ns": received_ns, "t_ns": report.t_ns,
        "window_start_ns": report.window_start_ns, "window_end_ns": report.window_end_ns,
        "rate": report.rate, "unit": report.unit, "rate_kg_h": report.rate_kg_h,
        "u_rate": report.u_rate, "lat": report.lat, "lon": report.lon,
        "detected": int(report.detected),
        "raw": raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw,
    }
