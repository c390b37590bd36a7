"""Gas analyzer lines: each format's good and malformed lines, the analyzer's own time
stamps in every format, the counts of rejected lines by kind, and the config errors of an
`[analyzers.*]` table, each naming its key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from acquisition.config.station import ConfigError, load_config
from drivers.analyzer import AnalyzerDecoder, LineError, LineFormat, LineParser
from tests.stations import write_station

T = dt.datetime(2026, 11, 24, 8, 15, 0, 250000, tzinfo=dt.UTC)
T_NS = int(T.timestamp()) * 10**9 + 250_000_000

DELIMITED = {"format": "delimited", "delimiter": ",", "columns": ["ch4", "", "h2o"],
             "channels": {"ch4": "ppm", "h2o": "%"}}
WHITESPACE = {**DELIMITED, "delimiter": "whitespace"}
TABS = {**DELIMITED, "delimiter": "\t"}
KEYVALUE = {"format": "keyvalue", "pair_separator": ",", "channels": {"ch4": "ppm", "h2o": "%"}}
SPACED_PAIRS = {**KEYVALUE, "pair_separator": "whitespace", "key_separator": ":"}
REGEX = {"format": "regex", "pattern": r"CH4 (?P<ch4>\S+) ppm( H2O (?P<h2o>\S+) %)?",
         "channels": {"ch4": "ppm", "h2o": "%"}}
GOOD = {"ch4": 2.013, "h2o": 1.25}


def parser(settings: dict[str, Any]) -> LineParser:
    return LineParser(LineFormat.model_validate(settings))


@pytest.mark.parametrize(("settings", "line"), [
    (DELIMITED, b"2.013,415.2,1.25"),
    (DELIMITED, b" 2.013 , 415.2 ,1.25 "),  # padded numbers
    (DELIMITED, b"2.013,status text,1.25"),  # a skipped column may hold anything
    (DELIMITED, b"2013e-3,415.2,+1.25"),
    (WHITESPACE, b"2.013   415.2\t 1.25"),
    (TABS, b"2.013\t415.2\t1.25"),
    (KEYVALUE, b"ch4=2.013,co2=415.2,h2o=1.25"),
    (KEYVALUE, b"h2o = 1.25, ch4 = 2.013,"),  # any order, spaces, a trailing separator
    (KEYVALUE, "ch4=2.013,unit=µmol/mol,h2o=1.25".encode()),  # UTF-8 text is text
    (SPACED_PAIRS, b"ch4:2.013  h2o:1.25 status:ok"),
    (REGEX, b"CH4 2.013 ppm H2O 1.25 %"),
], ids=lambda value: value.decode() if isinstance(value, bytes) else value["format"])
def test_good_lines_give_every_channel(settings: dict[str, Any], line: bytes) -> None:
    reading = parser(settings).parse(line)
    assert reading.values == GOOD and reading.t_ns is None


@pytest.mark.parametrize(("settings", "line", "kind", "message"), [
    (DELIMITED, b"2.013,415.2", "columns", "2 columns, expected 3"),
    (DELIMITED, b"2.013,415.2,1.25,9", "columns", "4 columns, expected 3"),
    (DELIMITED, b"ch4,co2,h2o", "not_a_number", "ch4 = 'ch4' is not a finite number"),
    (DELIMITED, b",415.2,1.25", "not_a_number", "ch4 = '' is not a finite number"),
    (DELIMITED, b"nan,415.2,1.25", "not_a_number", "ch4 = 'nan' is not a finite number"),
    (DELIMITED, b"2.0,415.2,-inf", "not_a_number", "h2o = '-inf' is not a finite number"),
    (DELIMITED, b"1e999,415.2,1.25", "not_a_number", "ch4 = '1e999' is not a finite number"),
    (DELIMITED, b"2.013,\xb5\x62\x01,1.25", "binary", "not UTF-8 text"),
    (DELIMITED, b"2.013,415.2,1.25\x00", "binary", "holds control characters"),
    (DELIMITED, b"2.013," + b"4" * 1100 + b",1.25", "too_long", "1111 bytes, more than 1024"),
    (WHITESPACE, b"2.013 415.2", "columns", "2 columns, expected 3"),
    (KEYVALUE, b"ch4=2.013,h2o", "bad_pair", "'h2o' has no '='"),
    (KEYVALUE, b"ch4=2.013,ch4=2.1,h2o=1", "bad_pair", "key 'ch4' is given twice"),
    (KEYVALUE, b"ch4=2.013,co2=415", "missing", "no 'h2o' in the line"),
    (KEYVALUE, b"ch4=2.013,h2o=wet", "not_a_number", "h2o = 'wet' is not a finite number"),
    (SPACED_PAIRS, b"ch4=2.013 h2o=1.25", "bad_pair", "'ch4=2.013' has no ':'"),
    (REGEX, b"CO2 415.2 ppm", "no_match", "the line does not match `pattern`"),
    (REGEX, b"CH4 2.013 ppm H2O 1.25 % extra", "no_match", "the line does not match `pattern`"),
    (REGEX, b"CH4 2.013 ppm", "missing", "no 'h2o' in the line"),
    (REGEX, b"CH4 2,013 ppm H2O 1.25 %", "not_a_number", "ch4 = '2,013' is not a finite number"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_malformed_lines_raise_naming_what_is_wrong(settings: dict[str, Any], line: bytes,
                                                    kind: str, message: str) -> None:
    with pytest.raises(LineError) as caught:
        parser(settings).parse(line)
    assert (caught.value.kind, str(caught.value)) == (kind, message)


def stamped(fmt: str, timezone: str | None = None) -> LineParser:
    time = {"field": "t", "format": fmt} | ({"timezone": timezone} if timezone else {})
    return parser({"format": "delimited", "delimiter": ";", "columns": ["t", "ch4"],
                   "channels": {"ch4": "ppm"}, "timestamp": time})


@pytest.mark.parametrize(("fmt", "timezone", "text", "t_ns"), [
    ("epoch", None, "1795508100.25", T_NS),
    ("epoch", None, "1795508100.123456789", T_NS - 250_000_000 + 123_456_789),  # exact
    ("epoch", None, "1795508100", T_NS - 250_000_000),
    ("epoch_ms", None, "1795508100250", T_NS),
    ("epoch_ms", None, "1795508100250.5", T_NS + 500_000),
    ("iso", None, "2026-11-24T08:15:00.250Z", T_NS),
    ("iso", None, "2026-11-24T16:15:00.25+08:00", T_NS),
    ("iso", None, "2026-11-24 08:15:00.250000+00:00", T_NS),
    ("iso", "Asia/Shanghai", "2026-11-24T16:15:00.250", T_NS),  # no offset: the zone's
    ("iso", "Asia/Shanghai", "2026-11-24T08:15:00.250Z", T_NS),  # an offset beats the zone
    ("iso", "America/New_York", "2026-11-24T03:15:00.250", T_NS),  # EST, UTC-5
    ("iso", "America/New_York", "2026-07-24T04:15:00.250", T_NS - 123 * 86_400 * 10**9),  # EDT
    ("%Y-%m-%d %H:%M:%S.%f", "UTC", "2026-11-24 08:15:00.250000", T_NS),
    ("%d/%m/%Y %H:%M:%S.%f", "Asia/Shanghai", "24/11/2026 16:15:00.25", T_NS),
    ("%Y%m%dT%H%M%S.%f%z", None, "20261124T101500.25+0200", T_NS),
], ids=lambda value: value if isinstance(value, str) else None)
def test_device_time_stamps_in_every_format(fmt: str, timezone: str | None, text: str,
                                            t_ns: int) -> None:
    assert stamped(fmt, timezone).parse(f"{text};2.0".encode()).t_ns == t_ns


@pytest.mark.parametrize(("fmt", "timezone", "text", "message"), [
    ("epoch", None, "soon", "'soon' is not a number (epoch)"),
    ("epoch", None, "NaN", "'NaN' is not a time from 1970 to 2262 (epoch)"),
    ("epoch", None, "-5", "'-5' is not a time from 1970 to 2262 (epoch)"),
    ("epoch", None, "1e999999999", "'1e999999999' is not a time from 1970 to 2262 (epoch)"),
    ("epoch_ms", None, "1e17", "'1e17' is not a time from 1970 to 2262 (epoch_ms)"),
    ("iso", None, "2026-11-24T08:15:00", "'2026-11-24T08:15:00' has no UTC offset and no "
     "`timestamp.timezone` is configured"),
    ("iso", None, "24/11/2026", "'24/11/2026': Invalid isoformat string: '24/11/2026'"),
    ("iso", "UTC", "1969-12-31T23:59:59", "'1969-12-31T23:59:59' is not a time from 1970 "
     "to 2262"),
    ("%Y-%m-%d %H:%M:%S", "UTC", "2026-11-24T08:15:00", "'2026-11-24T08:15:00': time data "
     "'2026-11-24T08:15:00' does not match format '%Y-%m-%d %H:%M:%S'"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_bad_time_stamps_are_rejected(fmt: str, timezone: str | None, text: str,
                                      message: str) -> None:
    with pytest.raises(LineError) as caught:
        stamped(fmt, timezone).parse(f"{text};2.0".encode())
    assert (caught.value.kind, str(caught.value)) == ("bad_timestamp", message)


def test_the_decoder_counts_every_line_by_kind_and_stamps_samples() -> None:
    settings = LineFormat.model_validate(
        {**DELIMITED, "columns": ["t", "ch4", "h2o"], "timestamp": {"field": "t",
                                                                     "format": "epoch"}})
    decoder = AnalyzerDecoder("ch4_1", settings)
    stream = (b"# capture of the CH4 analyzer\r\n"
              b"time,ch4,h2o\r\n"  # a header line
              b"1795508100.25,2.013,1.25\r\n"
              b"\r\n\n"  # empty lines are nothing
              b"1795508101.25,2.020\r\n"
              b"1795508102.25,2.030,1.30\n"
              b"\xb5\x62\x01\x07\x00\x5c\xff\xfe\r"  # a binary frame
              b"1795508103.25,2.040,1.35\r"
              b"yesterday,2.050,1.40\r\n"
              b"1795508104.25,2.060")  # cut short by the end of the capture
    samples, errors = [], []
    for start in range(0, len(stream), 7):  # as a serial port may deliver it
        for line in decoder.lines(stream[start:start + 7]):
            try:
                samples += decoder.decode(line, 111, 222)
            except LineError as error:
                errors.append(error.kind)
    decoder.flush()
    assert errors == ["not_a_number", "columns", "binary", "bad_timestamp"]
    assert dict(decoder.stats) == {"comments": 1, "lines": 3, "not_a_number": 1, "columns": 1,
                                   "binary": 1, "bad_timestamp": 1, "truncated": 1}
    assert decoder.last_error == "bad_timestamp: 'yesterday' is not a number (epoch)"
    assert [(s.t_ns, s.mono_ns, s.device, s.channel, s.value, s.unit) for s in samples[:2]] == [
        (T_NS, 222, "ch4_1", "ch4", 2.013, "ppm"), (T_NS, 222, "ch4_1", "h2o", 1.25, "%")]
    assert [s.t_ns for s in samples] == [T_NS + k * 10**9 for k in (0, 0, 2, 2, 3, 3)]
    # A run with no line end in sight is not kept without bound: dropped, counted in bytes.
    assert list(decoder.lines(b"\xb5\x62" * 3000)) == []
    assert decoder.stats["junk_bytes"] == 6000
    assert len(decoder.decode(next(decoder.lines(b"1795508105,2.1,1.4\n")), 0, 0)) == 2


def test_without_a_time_stamp_samples_take_the_host_time() -> None:
    decoder = AnalyzerDecoder("ch4_1", LineFormat.model_validate(KEYVALUE))
    (line,) = decoder.lines(b"ch4=2.013,h2o=1.25\n")
    assert {(s.t_ns, s.mono_ns) for s in decoder.decode(line, 111, 222)} == {(111, 222)}


# --- config errors -------------------------------------------------------------------

TEXT = 'transport = "file"\npath = "/dev/null"\n'


@pytest.mark.parametrize(("table", "key", "message"), [
    (TEXT + 'format = "delimited"\ncolumns = ["ch4"]\nchannels = { ch4 = "ppm" }',
     "analyzers.a", "format 'delimited' needs `delimiter`"),
    (TEXT + 'format = "delimited"\ndelimiter = ","\nchannels = { ch4 = "ppm" }',
     "analyzers.a", "format 'delimited' needs `columns`"),
    (TEXT + 'format = "delimited"\ndelimiter = ""\ncolumns = ["ch4"]\nchannels = { ch4 = "ppm" }',
     "analyzers.a.delimiter", "String should have at least 1 character (got '')"),
    (TEXT + 'format = "delimited"\ndelimiter = ","\ncolumns = ["ch4", "ch4"]\n'
     'channels = { ch4 = "ppm" }', "analyzers.a", "`columns` names ch4 more than once"),
    (TEXT + 'format = "delimited"\ndelimiter = ","\ncolumns = ["ch4", ""]\n'
     'channels = { co = "ppm" }', "analyzers.a",
     "channel 'co' is not produced by the format (it gives: ch4)"),
    (TEXT + 'format = "delimited"\ndelimiter = ","\ncolumns = ["ch4"]\n'
     'channels = { ch4 = "ppm" }\ntimestamp = { field = "time" }', "analyzers.a",
     "`timestamp.field` 'time' is not produced by the format (it gives: ch4)"),
    (TEXT + 'format = "delimited"\ndelimiter = ","\ncolumns = ["ch4"]\nchannels = {}',
     "analyzers.a.channels", "Dictionary should have at least 1 item after validation, not 0"),
    (TEXT + 'format = "delimited"\ndelimiter = ","\ncolumns = ["ch4"]\n'
     'channels = { ch4 = "ppm" }\npattern = "(?P<ch4>.*)"', "analyzers.a",
     "`pattern` is a key of format 'regex', not of 'delimited'"),
    (TEXT + 'format = "keyvalue"\nchannels = { ch4 = "ppm" }', "analyzers.a",
     "format 'keyvalue' needs `pair_separator`"),
    (TEXT + 'format = "keyvalue"\npair_separator = ","\ndelimiter = ","\n'
     'channels = { ch4 = "ppm" }', "analyzers.a",
     "`delimiter` is a key of format 'delimited', not of 'keyvalue'"),
    (TEXT + 'format = "keyvalue"\npair_separator = ":"\nkey_separator = ":"\n'
     'channels = { ch4 = "ppm" }', "analyzers.a",
     "`pair_separator` and `key_separator` must differ"),
    (TEXT + 'format = "regex"\nchannels = { ch4 = "ppm" }', "analyzers.a",
     "format 'regex' needs `pattern`"),
    (TEXT + 'format = "regex"\npattern = "CH4 (?P<ch4>[0-9.]+"\nchannels = { ch4 = "ppm" }',
     "analyzers.a.pattern", "not a valid regular expression: missing ), unterminated "
     "subpattern at position 4 (got 'CH4 (?P<ch4>[0-9.]+')"),
    (TEXT + 'format = "regex"\npattern = "CH4 ([0-9.]+)"\nchannels = { ch4 = "ppm" }',
     "analyzers.a.pattern", "the pattern has no named group, such as (?P<ch4>[-+.\\dEe]+) "
     "(got 'CH4 ([0-9.]+)')"),
    (TEXT + 'format = "regex"\npattern = "CH4 (?P<methane>[0-9.]+)"\n'
     'channels = { ch4 = "ppm" }', "analyzers.a",
     "channel 'ch4' is not produced by the format (it gives: methane)"),
    (TEXT + 'format = "csv"\nchannels = { ch4 = "ppm" }', "analyzers.a.format",
     "Input should be 'delimited', 'keyvalue' or 'regex' (got 'csv')"),
    (TEXT + 'format = "keyvalue"\npair_separator = ","\nchannels = { ch4 = "ppm" }\n'
     'timestamp = { field = "t", timezone = "Mars/Olympus" }', "analyzers.a.timestamp.timezone",
     "unknown time zone 'Mars/Olympus' (an IANA name such as 'UTC' or 'Asia/Shanghai') "
     "(got 'Mars/Olympus')"),
    (TEXT + 'format = "keyvalue"\npair_separator = ","\nchannels = { ch4 = "ppm" }\n'
     'timestamp = { field = "t", format = "%H:%M:%S" }', "analyzers.a.timestamp",
     "a strptime format without %z needs `timezone`"),
    (TEXT + 'format = "keyvalue"\npair_separator = ","\nchannels = { ch4 = "ppm" }\n'
     'timestamp = { field = "t", format = "%H:%Q", timezone = "UTC" }',
     "analyzers.a.timestamp",
     "strptime format '%H:%Q' cannot be read: 'Q' is a bad directive in format '%H:%Q'"),
    (TEXT + 'format = "keyvalue"\npair_separator = ","\nchannels = { ch4 = "ppm" }\n'
     'timestamp = { field = "t", format = "unix" }', "analyzers.a.timestamp",
     "format 'unix' is not epoch, epoch_ms, iso or a strptime format (with % directives)"),
    (TEXT + 'format = "keyvalue"\npair_separator = ","\nchannels = { ch4 = "ppm" }\n'
     'timestamp = { field = "t", format = "epoch", timezone = "UTC" }',
     "analyzers.a.timestamp", "`timezone` does not apply to epoch times (UTC)"),
    ('transport = "tcp"\nformat = "keyvalue"\npair_separator = ","\n'
     'channels = { ch4 = "ppm" }', "analyzers.a", "a tcp stream needs `host` and `tcp_port`"),
    (TEXT + 'format = "keyvalue"\npair_separator = ","\nchannels = { ch4 = "ppm" }\n'
     'max_line_bytes = 8', "analyzers.a.max_line_bytes",
     "Input should be greater than or equal to 16 (got 8)"),
    (TEXT + 'format = "keyvalue"\npair_separator = ","\nchannels = { ch4 = "ppm" }\n'
     'unit_id = 3', "analyzers.a.unit_id", "unknown key (check spelling; see "
     "config/station.example.toml)"),
    ('protocol = "modbus"\nline = "bus9"\nunit_id = 12', "analyzers.a.line",
     "no line named 'bus9'"),
    ('protocol = "modbus"\nline = "bus0"\nunit_id = 2', "analyzers.a.unit_id",
     "unit id 2 is already used by mfcs.bronkhorst on line 'bus0'"),
    ('protocol = "modbus"\nline = "bus0"\nunit_id = 12\nprofile = "anemometer"',
     "analyzers.a.profile", "profile 'anemometer' is for a anemometer, not a gas_analyzer"),
    ('protocol = "modbus"\nline = "bus0"\nunit_id = 12\nprofile = "picarro"',
     "analyzers.a.profile", "unknown profile 'picarro' (shipped: alicat, anemometer, "
     "bronkhorst, gas_analyzer, generic)"),
    ('protocol = "modbus"\nline = "bus0"\nunit_id = 12\nformat = "regex"',
     "analyzers.a.format", "unknown key (check spelling; see config/station.example.toml)"),
    ('protocol = "serial"\nline = "bus0"', "analyzers.a",
     "`protocol` must be 'text' (the default) or 'modbus'"),
], ids=lambda value: value if isinstance(value, str) and "\n" not in value else None)
def test_config_errors_name_the_key(tmp_path: Path, table: str, key: str, message: str) -> None:
    path = write_station(tmp_path, extra=f"[analyzers.a]\n{table}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [(key, message)]


def test_an_analyzer_may_not_take_another_device_s_name(tmp_path: Path) -> None:
    path = write_station(tmp_path, extra='[analyzers.alicat]\nprotocol = "modbus"\n'
                                         'line = "bus0"\nunit_id = 12\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        ("analyzers.alicat", "the name 'alicat' is already used by mfcs.alicat")]


def test_a_good_table_of_each_protocol_loads(tmp_path: Path) -> None:
    config = load_config(write_station(tmp_path, extra=f"""
[analyzers.a]
{TEXT}format = "regex"
pattern = "CH4 (?P<ch4>\\\\S+) at (?P<t>.+)"
channels = {{ ch4 = "ppm" }}
timestamp = {{ field = "t", format = "iso", timezone = "Asia/Shanghai" }}
[analyzers.m]
protocol = "modbus"
line = "bus0"
unit_id = 12
registers = {{ ch4 = 100 }}
word_order = "little"
"""))
    text, modbus = config.analyzers["a"], config.analyzers["m"]
    assert text.protocol == "text" and text.timestamp is not None
    assert modbus.protocol == "modbus"
    profile = modbus.resolved_profile  # type: ignore[union-attr]
    assert (profile.kind, profile.registers["ch4"].address, profile.word_order) == (
        "gas_analyzer", 100, "little")
    assert profile.unit_of("ch4") == "ppm"
