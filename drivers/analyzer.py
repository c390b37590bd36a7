"""Gas analyzer text output: bytes in, samples out, every line not used counted by kind.

Analyzers (a methane analyzer beside the release, a device under test's own sensors)
print one record a line, in one of three shapes a `LineFormat` describes: delimited
columns, key=value pairs, or a regular expression with named groups. Each configured
channel becomes a sample in its configured unit, stamped with the analyzer's own time
if the line carries one (`DeviceTime`), else with the host's when the line arrived.

A line that cannot be used raises `LineError` naming what was wrong; `AnalyzerDecoder`
counts it in `stats` under its kind, so that a misconfigured format or a noisy cable
shows in the figures instead of stopping anything:

- `lines`: lines that gave samples;
- rejected lines: `too_long`, `binary` (not UTF-8 text, or control characters),
  `columns` (not the configured number of columns), `bad_pair` (a pair without its
  key separator, or a key given twice), `no_match` (the pattern does not match the whole
  line), `missing` (a channel or the time stamp absent), `not_a_number` (a channel's
  value is not a finite number), `bad_timestamp`;
- from the line splitter (drivers.lines): `comments`, `truncated`, and `junk_bytes` (a
  count of bytes: a run with no line end in sight).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import zoneinfo
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

from pydantic import Field, field_validator, model_validator

from drivers.endpoint import StrictModel
from drivers.lines import LineSplitter
from drivers.sample import Sample

WHITESPACE = "whitespace"  # a separator: any run of spaces and tabs
EPOCH_SCALE = {"epoch": 10**9, "epoch_ms": 10**6}  # nanoseconds per unit
MAX_T_NS = 2**63  # the store keeps t_ns in a signed 64-bit integer: up to 2262
UTC_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
PROBE = dt.datetime(2026, 11, 24, 8, 15, 0, 123456, tzinfo=dt.UTC)  # to try a strptime format
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # no text line holds these (tab may)
# The keys of each format: those given for another format are a mistake.
FORMAT_KEYS = {"delimited": ("delimiter", "columns"),
               "keyvalue": ("pair_separator", "key_separator"),
               "regex": ("pattern",)}
REQUIRED_KEYS = {"delimited": ("delimiter", "columns"), "keyvalue": ("pair_separator",),
                 "regex": ("pattern",)}


class LineError(ValueError):
    """A line that gives no samples; `kind` is the stats key it is counted under."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def time_zone(name: str) -> zoneinfo.ZoneInfo:
    """An IANA time zone; ValueError naming it if the system does not know it."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone '{name}' (an IANA name such as 'UTC' or "
                         "'Asia/Shanghai')") from None


class DeviceTime(StrictModel):
    """Where a line carries the analyzer's own time stamp, and how to read it."""

    field: str = Field(min_length=1, description="the column, key or group that holds it")
    format: str = Field("iso", description="epoch (s), epoch_ms, iso, or a strptime format")
    timezone: str | None = Field(
        None, description="IANA zone of times written without a UTC offset (iso, strptime)")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            time_zone(value)
        return value

    @model_validator(mode="after")
    def _readable(self) -> DeviceTime:
        if self.format in EPOCH_SCALE:
            if self.timezone is not None:
                raise ValueError(f"`timezone` does not apply to {self.format} times (UTC)")
            return self
        if self.format == "iso":
            return self
        if "%" not in self.format:
            raise ValueError(f"format {self.format!r} is not epoch, epoch_ms, iso or a "
                             "strptime format (with % directives)")
        try:
            dt.datetime.strptime(PROBE.strftime(self.format), self.format)
        except ValueError as error:
            raise ValueError(f"strptime format {self.format!r} cannot be read: {error}") from None
        if "%z" not in self.format and self.timezone is None:
            raise ValueError("a strptime format without %z needs `timezone`")
        return self


class LineFormat(StrictModel):
    """How an analyzer's lines are taken apart, and which values are kept, in which unit."""

    format: Literal["delimited", "keyvalue", "regex"]
    delimiter: str | None = Field(
        None, min_length=1, description="delimited: between columns; 'whitespace': any run")
    columns: list[str] | None = Field(
        None, min_length=1, description="delimited: column names in order; '' skips one")
    pair_separator: str | None = Field(
        None, min_length=1, description="keyvalue: between pairs; 'whitespace': any run")
    key_separator: str = Field("=", min_length=1, description="keyvalue: key, this, value")
    pattern: str | None = Field(
        None, description="regex: must match the whole line; named groups give the values")
    channels: dict[str, str] = Field(min_length=1, description="channel name -> unit")
    timestamp: DeviceTime | None = Field(None, description="no table: the host's clock")
    max_line_bytes: int = Field(1024, ge=16, le=65_536, description="longer lines: too_long")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            compiled = re.compile(value)
        except re.error as error:
            raise ValueError(f"not a valid regular expression: {error}") from None
        if not compiled.groupindex:
            raise ValueError("the pattern has no named group, such as (?P<ch4>[-+.\\dEe]+)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LineFormat:
        for fmt, keys in FORMAT_KEYS.items():
            for key in keys:
                if fmt != self.format and key in self.model_fields_set:
                    raise ValueError(f"`{key}` is a key of format '{fmt}', not of "
                                     f"'{self.format}'")
        for key in REQUIRED_KEYS[self.format]:
            if getattr(self, key) is None:
                raise ValueError(f"format '{self.format}' needs `{key}`")
        if self.format == "keyvalue" and self.pair_separator == self.key_separator:
            raise ValueError("`pair_separator` and `key_separator` must differ")
        named = [name for name in self.columns or [] if name]
        twice = sorted({name for name in named if named.count(name) > 1})
        if twice:
            raise ValueError(f"`columns` names {', '.join(twice)} more than once")
        wanted = [(f"channel '{name}'", name) for name in self.channels]
        if self.timestamp is not None:
            wanted.append((f"`timestamp.field` '{self.timestamp.field}'", self.timestamp.field))
        produced = self.produced()
        for what, name in wanted:
            if produced is not None and name not in produced:
                raise ValueError(f"{what} is not produced by the format (it gives: "
                                 f"{', '.join(sorted(produced)) or 'nothing'})")
        return self

    def produced(self) -> set[str] | None:
        """The names a line of this format gives; None if any (key=value pairs)."""
        if self.format == "delimited":
            return {name for name in self.columns or [] if name}
        if self.format == "regex":
            return set(re.compile(self.pattern or "").groupindex)
        return None


@dataclass(frozen=True, slots=True)
class Reading:
    """What one line says: the analyzer's time (None: it gives none) and each channel."""

    t_ns: int | None
    values: dict[str, float]


def _split(text: str, separator: str) -> list[str]:
    if separator == WHITESPACE:
        return text.split()
    return [part.strip() for part in text.split(separator)]


class LineParser:
    """Takes one line apart as its `LineFormat` says; `parse` raises LineError if it cannot."""

    def __init__(self, settings: LineFormat) -> None:
        self.settings = settings
        self._pattern = re.compile(settings.pattern) if settings.pattern else None
        time = settings.timestamp
        self._zone = time_zone(time.timezone) if time and time.timezone else None

    def parse(self, raw: bytes) -> Reading:
        limit = self.settings.max_line_bytes
        if len(raw) > limit:
            raise LineError("too_long", f"{len(raw)} bytes, more than {limit}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise LineError("binary", "not UTF-8 text") from None
        if CONTROL.search(text):
            raise LineError("binary", "holds control characters")
        fields = self._fields(text)
        values = {channel: self._number(channel, fields) for channel in self.settings.channels}
        time = self.settings.timestamp
        t_ns = None if time is None else self._device_t_ns(self._field(time.field, fields))
        return Reading(t_ns, values)

    def _fields(self, text: str) -> dict[str, str]:
        settings = self.settings
        if settings.format == "delimited":
            assert settings.delimiter is not None and settings.columns is not None
            parts = _split(text, settings.delimiter)
            if len(parts) != len(settings.columns):
                raise LineError("columns", f"{len(parts)} columns, expected "
                                f"{len(settings.columns)}")
            return {name: part for name, part in zip(settings.columns, parts, strict=True)
                    if name}
        if settings.format == "keyvalue":
            assert settings.pair_separator is not None
            return self._pairs(_split(text, settings.pair_separator))
        assert self._pattern is not None
        match = self._pattern.fullmatch(text)
        if match is None:
            raise LineError("no_match", "the line does not match `pattern`")
        return {name: value for name, value in match.groupdict().items() if value is not None}

    def _pairs(self, pairs: list[str]) -> dict[str, str]:
        separator = self.settings.key_separator
        fields: dict[str, str] = {}
        for pair in filter(None, pairs):  # a trailing separator leaves an empty one
            key, found, value = pair.partition(separator)
            key = key.strip()
            if not found:
                raise LineError("bad_pair", f"{pair[:40]!r} has no {separator!r}")
            if key in fields:
                raise LineError("bad_pair", f"key '{key}' is given twice")
            fields[key] = value.strip()
        return fields

    @staticmethod
    def _field(name: str, fields: dict[str, str]) -> str:
        try:
            return fields[name]
        except KeyError:
            raise LineError("missing", f"no '{name}' in the line") from None

    def _number(self, channel: str, fields: dict[str, str]) -> float:
        text = self._field(channel, fields)
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not math.isfinite(value):
            raise LineError("not_a_number", f"{channel} = {text[:40]!r} is not a finite number")
        return value

    def _device_t_ns(self, text: str) -> int:
        """The analyzer's time stamp as UTC nanoseconds (microseconds for iso and strptime
        times, which is what Python's datetime keeps)."""
        time = self.settings.timestamp
        assert time is not None
        if time.format in EPOCH_SCALE:
            try:
                number = Decimal(text)  # exact, where a float would round the nanoseconds
            except InvalidOperation:
                raise LineError("bad_timestamp", f"{text[:40]!r} is not a number "
                                f"({time.format})") from None
            scale = EPOCH_SCALE[time.format]
            if not (number.is_finite() and 0 <= number < Decimal(MAX_T_NS) / scale):
                raise LineError("bad_timestamp", f"{text[:40]!r} is not a time from 1970 to "
                                f"2262 ({time.format})")
            return int(number * scale)
        try:
            moment = (dt.datetime.fromisoformat(text) if time.format == "iso"
                      else dt.datetime.strptime(text, time.format))
        except ValueError as error:
            raise LineError("bad_timestamp", f"{text[:40]!r}: {error}") from None
        if moment.tzinfo is None:
            if self._zone is None:
                raise LineError("bad_timestamp", f"{text[:40]!r} has no UTC offset and no "
                                "`timestamp.timezone` is configured")
            moment = moment.replace(tzinfo=self._zone)
        t_ns = (moment - UTC_EPOCH) // dt.timedelta(microseconds=1) * 1000
        if not 0 <= t_ns < MAX_T_NS:
            raise LineError("bad_timestamp", f"{text[:40]!r} is not a time from 1970 to 2262")
        return t_ns


class AnalyzerDecoder:
    """One analyzer's stream: lines from the shared splitter, samples from its parser."""

    def __init__(self, device: str, settings: LineFormat) -> None:
        self.device = device
        self.parser = LineParser(settings)
        self.stats: Counter[str] = Counter()
        self.last_error: str | None = None
        self._splitter = LineSplitter(self.stats, settings.max_line_bytes)

    def lines(self, data: bytes) -> Iterator[bytes]:
        """The complete lines `data` ends (with what came before it)."""
        return self._splitter.feed(data)

    def decode(self, line: bytes, t_ns: int, mono_ns: int) -> list[Sample]:
        """One sample a channel, at the analyzer's time if the line has one, else at `t_ns`
        (the host's, when the line arrived). A LineError is counted, kept, and re-raised."""
        try:
            reading = self.parser.parse(line)
        except LineError as error:
            self.stats[error.kind] += 1
            self.last_error = f"{error.kind}: {error}"
            raise
        self.stats["lines"] += 1
        t = t_ns if reading.t_ns is None else reading.t_ns
        units = self.parser.settings.channels
        return [Sample(t, mono_ns, self.device, channel, value, units[channel])
                for channel, value in reading.values.items()]

    def flush(self) -> None:
        """At the end of a file or a connection: a line without its end is truncated."""
        self._splitter.flush()
