"""NMEA decoding and GNSS interpretation: real captures, every sentence type, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from functools import reduce
from pathlib import Path

import pytest

from drivers.gnss import GnssInterpreter, at_least, decode_capture
from drivers.met import MetInterpreter
from drivers.nmea import NmeaDecoder

CAPTURES = Path(__file__).parent / "data" / "captures"
REPO = Path(__file__).resolve().parent.parent


def nmea(body: str) -> str:
    """A sentence with its real checksum, CRLF-terminated."""
    checksum = reduce(lambda acc, ch: acc ^ ord(ch), body, 0)
    return f"${body}*{checksum:02X}\r\n"


def interpret(lines: str | bytes) -> tuple[list, list, Counter[str]]:
    decoder = NmeaDecoder()
    interpreter = GnssInterpreter("rx", decoder.stats)
    samples, fixes = [], []
    data = lines.encode() if isinstance(lines, str) else lines
    for sentence in decoder.feed(data, 1_700_000_000_000_000_000, 0):
        found, fix = interpreter.interpret(sentence)
        samples += found
        if fix:
            fixes.append(fix)
    return samples, fixes, decoder.stats


def test_real_capture_sirf_trig_with_beidou_gb_talker() -> None:
    fixes, stats = decode_capture((CAPTURES / "sirf-trig-beidou-gb.nmea").read_bytes())
    assert stats["comments"] == 9 and stats["sentences"] == 68
    assert stats["bad_checksum"] == 0 and stats["malformed"] == 0
    assert len(fixes) == 10  # GGA + GNS for each of five epochs
    assert [f.quality for f in fixes[:6]] == [0] * 6  # cold start: no fix yet
    assert all(f.lat is None for f in fixes[:6])
    last = fixes[-1]
    assert last.talker == "GN" and last.quality_name == "autonomous"  # GNS mode "ANNA"
    assert last.lat == pytest.approx(31 + 14.8821 / 60) and last.lon == pytest.approx(
        121 + 35.2428 / 60)
    assert last.alt == 167.2 and last.sats == 7 and last.hdop == 1.2
    assert last.utc == "2015-03-02T05:32:33.438000+00:00"


def test_real_capture_southern_eastern_hemisphere() -> None:
    fixes, stats = decode_capture((CAPTURES / "globalsat-bu353s4.nmea").read_bytes())
    assert len(fixes) == 10 and stats["comments"] == 6
    assert all(f.quality == 1 and f.sats in (7, 8) for f in fixes)
    first = fixes[0]
    assert first.lat == pytest.approx(-(37 + 47.0873 / 60))
    assert first.lon == pytest.approx(175 + 18.8938 / 60)
    assert first.utc is None  # GGA before the first RMC: date not known yet
    assert fixes[1].utc == "2014-12-31T03:07:20+00:00"


def test_crf_gnss_decode_prints_one_json_fix_per_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "acquisition.cli", "gnss", "decode",
         str(CAPTURES / "globalsat-bu353s4.nmea")],
        capture_output=True, text=True, check=True, cwd=REPO)
    fixes = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(fixes) == 10
    assert {"utc", "lat", "lon", "alt", "quality_name", "sats", "hdop"} <= set(fixes[0])
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    assert summary["fixes"] == 10 and summary["sentences"] == 34


GGA_RTK = "GNGGA,081500.00,3445.1234567,N,11337.7654321,E,4,24,0.6,101.25,M,-12.3,M,1.0,0000"


def test_every_sentence_type_and_talker() -> None:
    lines = (nmea("GNRMC,081500.00,A,3445.1234567,N,11337.7654321,E,0.0,,241126,,,R")
             + nmea(GGA_RTK)
             + nmea("GPGST,081500.00,0.02,0.015,0.010,45.0,0.012,0.011,0.025")
             + nmea("GNZDA,081500.00,24,11,2026,00,00")
             + nmea("GNGSA,A,3,01,02,03,,,,,,,,,,1.5,0.8,1.2")
             + nmea("GBGNS,081501.00,3445.1234600,N,11337.7654300,E,RF,20,0.7,101.3,-12.3,,"))
    samples, fixes, stats = interpret(lines)
    assert stats["sentences"] == 6 and not stats["malformed"]
    by_channel = {s.channel: s.value for s in samples}
    assert by_channel["sigma_lat"] == 0.012 and by_channel["sigma_alt"] == 0.025
    assert by_channel["gsa_pdop"] == 1.5 and by_channel["gsa_vdop"] == 1.2
    assert by_channel["rmc_valid"] == 1.0
    assert fixes[0].quality_name == "rtk_fixed" and fixes[0].utc == "2026-11-24T08:15:00+00:00"
    assert fixes[0].lat == pytest.approx(34 + 45.1234567 / 60, abs=1e-9)
    assert fixes[1].quality_name == "rtk_fixed" and fixes[1].talker == "GB"  # GNS "RF": best


def test_clock_offset_from_rmc_and_zda() -> None:
    decoder = NmeaDecoder()
    interpreter = GnssInterpreter("rx", decoder.stats)
    host_ns = 1_795_508_100_000_000_000  # 2026-11-24T08:15:00Z
    for sentence in decoder.feed(nmea("GNZDA,081502.50,24,11,2026,00,00").encode(),
                                 host_ns, 0):
        samples, _ = interpreter.interpret(sentence)
    assert interpreter.clock_offset_s == pytest.approx(2.5)
    assert {s.channel: s.value for s in samples}["clock_offset"] == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("data", "counter"),
    [
        ((nmea(GGA_RTK)[:-4] + "00\r\n").encode(), "bad_checksum"),  # wrong checksum
        (nmea(GGA_RTK)[:-8].encode() + b"\r\n", "no_checksum"),  # truncated line
        (nmea(GGA_RTK.replace(",4,24,", ",x,24,")).encode(), "malformed"),  # not a number
        (nmea(GGA_RTK.replace("3445.1234567", "34x5.12")).encode(), "malformed"),
        (nmea(GGA_RTK.replace(",N,", ",Q,")).encode(), "malformed"),  # bad hemisphere
        (nmea(GGA_RTK.replace(",4,24,", ",9,24,")).encode(), "malformed"),  # quality 9
        (nmea(GGA_RTK.replace(",0.6,", ",nan,")).encode(), "malformed"),
        (nmea("GNGNS,081501.00,3445.12,N,11337.76,E,XZ,20,0.7,101.3,-12.3,,").encode(),
         "malformed"),
        (nmea("GNRMC,081500.00,Q,3445.12,N,11337.76,E,0.0,,241126,,,A").encode(), "malformed"),
        (b"\xb5\x62\x01\x07\x5c\x00\x00\xff\xfe" + nmea(GGA_RTK).encode(), "junk_bytes"),
        (b"# a comment line\n" + nmea(GGA_RTK).encode(), "comments"),
        (b"\x00\xff" * 600, "junk_bytes"),  # binary garbage without any line end
        (("$GNGGA," + "9" * 300 + "*00\r\n").encode(), "too_long"),
    ],
)
def test_bad_input_is_counted_never_raised(data: bytes, counter: str) -> None:
    _, fixes, stats = interpret(data)
    assert stats[counter] >= 1, dict(stats)
    if counter in ("junk_bytes", "comments") and b"GNGGA" in data[-200:]:
        assert len(fixes) == 1 and fixes[0].quality == 4  # the good sentence still counts
    else:
        assert all(f.lat is None or f.quality == 4 for f in fixes)


def test_line_endings_and_split_chunks() -> None:
    text = nmea(GGA_RTK) + nmea(GGA_RTK).replace("\r\n", "\n") + nmea(GGA_RTK).replace(
        "\r\n", "\r")
    decoder = NmeaDecoder()
    interpreter = GnssInterpreter("rx", decoder.stats)
    fixes = []
    data = text.encode()
    for start in range(0, len(data), 7):  # bytes arrive in small pieces, as on a serial port
        for sentence in decoder.feed(data[start:start + 7], 0, 0):
            fixes.append(interpreter.interpret(sentence)[1])
    assert len(fixes) == 3 and all(f.quality == 4 for f in fixes)


def test_truncated_last_line_of_a_file_is_counted() -> None:
    fixes, stats = decode_capture(nmea(GGA_RTK).encode() + b"$GNGGA,0815")
    assert len(fixes) == 1 and stats["truncated"] == 1


def test_quality_ordering_for_surveys() -> None:
    assert at_least(4, "rtk_fixed") and not at_least(5, "rtk_fixed")
    assert at_least(5, "rtk_float") and at_least(4, "dgnss") and not at_least(1, "dgnss")
    assert not at_least(0, "autonomous") and not at_least(6, "autonomous")


def test_met_mwv_and_mda() -> None:
    decoder = NmeaDecoder()
    met = MetInterpreter("ws", decoder.stats)
    lines = (nmea("WIMWV,271.5,T,7.2,K,A") + nmea("WIMWV,15.0,R,10.0,N,A")
             + nmea("WIMWV,15.0,R,10.0,N,V")
             + nmea("WIMDA,29.92,I,1.0132,B,17.5,C,,,,,,,270.0,T,,M,4.0,N,2.1,M")
             + nmea("WIMWV,400.0,T,3.0,M,A"))
    samples = []
    for sentence in decoder.feed(lines.encode(), 0, 0):
        samples += met.interpret(sentence)[0]
    values = [(s.channel, round(s.value, 3), s.unit) for s in samples]
    assert values == [
        ("wind_direction", 271.5, "deg"), ("wind_speed", 2.0, "m/s"),
        ("wind_angle_relative", 15.0, "deg"), ("wind_speed", 5.144, "m/s"),
        ("air_pressure", 1013.2, "hPa"), ("air_temperature", 17.5, "degC"),
        ("wind_direction", 270.0, "deg"), ("wind_speed", 2.1, "m/s"),
    ]
    assert decoder.stats["malformed"] == 1 and decoder.stats["invalid"] == 1
