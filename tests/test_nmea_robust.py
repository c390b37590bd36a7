"""What real receivers send besides the sentences we use: every vendor's proprietary
sentences, types pynmea2 does not know, binary UBX/RTCM frames, NULs, cut and over-long
lines. None of it may stop the decoder, `crf gnss decode` or the daemon's reader; all of
it is counted by kind, and every standard sentence around it still decodes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pynmea2
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from acquisition.config.station import StationConfig
from acquisition.samples.bus import SampleBus
from acquisition.site import nmea_reader
from acquisition.site.nmea_reader import NmeaReader
from acquisition.site.stream_reader import LOG_EVERY_S, LOGGED_CHARS
from drivers.gnss import Fix, GnssInterpreter, decode_capture
from drivers.met import MetInterpreter
from drivers.nmea import NmeaDecoder, Sentence
from drivers.sample import Sample
from drivers.stream import StreamSettings
from simulators.station import SimStation
from tests.stations import running_daemon, store_rows
from tests.test_gnss import nmea

CAPTURES = Path(__file__).parent / "data" / "captures"
REPO = Path(__file__).resolve().parent.parent
CRLF = b"\r\n"


def dm(degrees: int, minutes: float) -> float:
    return degrees + minutes / 60


@dataclass(frozen=True)
class Capture:
    """What a capture holds, counted by hand from the file."""

    name: str
    fixes: int  # GGA/GNS sentences
    located: int  # ... of which with a fix (quality > 0)
    quality: int  # the quality of those
    first_position: tuple[float, float]  # of the first located fix
    first_utc: str | None  # None: GGA before the first RMC/ZDA, date not known yet
    stats: dict[str, int]  # every count the decoder must report, and no other


CAPTURE_CASES = [
    Capture("mtk-3301.nmea", 11, 4, 1, (dm(52, 12.982135), dm(6, 53.101394)),
            "2008-08-23T08:14:36+00:00",
            {"sentences": 56, "comments": 21, "no_checksum": 3,  # the three $POLYN lines
             "proprietary:MTK": 12, "ignored:GSV": 8, "ignored:VTG": 11}),
    Capture("garmin-15x.nmea", 4, 4, 2, (dm(32, 38.9148), -dm(108, 22.4466)),
            "2022-10-18T11:32:58+00:00",
            {"sentences": 33, "comments": 11, "proprietary:GRM": 9, "ignored:GSV": 12}),
    Capture("skytraq-px1172rh.nmea", 2, 2, 5, (dm(44, 4.1271062), -dm(121, 18.8438377)), None,
            {"sentences": 48, "comments": 12, "junk_bytes": 113 + 147,  # two gpsd JSON lines
             "proprietary:STI": 12, "unknown_type:THS": 2, "ignored:GSV": 14,
             "ignored:GLL": 2, "ignored:VTG": 2, "ignored:HDT": 2}),
    Capture("quectel-lc79d.nmea", 2, 2, 1, (dm(50, 2.457296), dm(19, 58.828604)), None,
            {"sentences": 46, "comments": 16, "proprietary:GLO": 19, "ignored:GSV": 17}),
    Capture("st-teseo-liv4f.nmea", 2, 2, 1, (dm(47, 23.00484), dm(0, 45.88150)),
            "2025-03-21T13:58:06+00:00",
            {"sentences": 63, "comments": 12, "junk_bytes": 63,  # the extra '$' of each line
             "proprietary:STM": 7, "ignored:GSV": 28, "ignored:TXT": 2, "ignored:VTG": 2,
             "ignored:GBS": 2}),
    Capture("manual-examples.nmea", 1, 1, 1, (dm(47, 17.11399), dm(8, 33.91590)), None,
            {"sentences": 17, "comments": 8, "proprietary:UBX": 3, "proprietary:QTM": 5,
             "ignored:GSV": 1, "ignored:GLL": 1, "ignored:VTG": 1, "ignored:TXT": 1}),
]


@pytest.mark.parametrize("capture", CAPTURE_CASES, ids=lambda c: c.name)
def test_real_captures_with_proprietary_sentences_decode_and_count(capture: Capture) -> None:
    path = CAPTURES / capture.name
    fixes, stats = decode_capture(path.read_bytes())
    assert dict(stats) == capture.stats
    located = [f for f in fixes if f.quality > 0]
    assert (len(fixes), len(located)) == (capture.fixes, capture.located)
    assert {f.quality for f in located} == {capture.quality}
    assert (located[0].lat, located[0].lon) == pytest.approx(capture.first_position, abs=1e-9)
    assert located[0].utc == capture.first_utc

    result = subprocess.run([sys.executable, "-m", "acquisition.cli", "gnss", "decode",
                             str(path)], capture_output=True, text=True, cwd=REPO, timeout=30)
    assert result.returncode == 0, result.stderr
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(p["quality"], p["lat"]) for p in printed] == [(f.quality, f.lat) for f in fixes]
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    assert summary == {"file": str(path), "fixes": capture.fixes, **capture.stats}


def test_every_vendor_is_covered() -> None:
    vendors = {kind for case in CAPTURE_CASES for kind in case.stats
               if kind.startswith("proprietary:")}
    assert {"proprietary:UBX", "proprietary:MTK", "proprietary:GRM", "proprietary:STI",
            "proprietary:QTM", "proprietary:STM"} <= vendors


# --- a stream full of junk -----------------------------------------------------------

T0 = dt.datetime(2026, 11, 24, 8, 15, 0)
NOT_IN_JUNK = b"$!#\r\n"  # so that junk never makes a line or a sentence start by chance
JUNK_BYTES = bytes(b for b in range(256) if b not in NOT_IN_JUNK)


def capture_line(name: str, prefix: bytes) -> bytes:
    """The first line of a capture that starts with `prefix` (one leading '$' kept)."""
    line = next(line for line in (CAPTURES / name).read_bytes().splitlines()
                if line.startswith(prefix))
    return b"$" + line.lstrip(b"$")


VENDOR_LINES = {  # manufacturer code: a sentence of that vendor, from the captures
    "UBX": capture_line("manual-examples.nmea", b"$PUBX,00"),
    "MTK": capture_line("mtk-3301.nmea", b"$PMTKCHN"),
    "GRM": capture_line("garmin-15x.nmea", b"$PGRME"),
    "STI": capture_line("skytraq-px1172rh.nmea", b"$PSTI,030"),
    "QTM": capture_line("manual-examples.nmea", b"$PQTMEPE"),
    "STM": capture_line("st-teseo-liv4f.nmea", b"$$PSTMVER"),
    "GLO": capture_line("quectel-lc79d.nmea", b"$PGLOR,1,FIX"),
}
UNUSED = ["GSV", "GLL", "VTG", "TXT"]


def epoch_sentences(k: int, step_s: float) -> list[bytes]:
    """An RTK receiver's sentences of epoch `k`: GGA, RMC, GST used, the others not."""
    t = T0 + dt.timedelta(seconds=k * step_s)
    hms = f"{t:%H%M%S}.{t.microsecond // 10_000:02d}"
    at = "3445.1234567,N,11337.7654321,E"
    return [nmea(body).encode() for body in (
        f"GNGGA,{hms},{at},4,24,0.6,101.25,M,-12.3,M,1.0,0000",
        f"GNRMC,{hms},A,{at},0.0,,{t:%d%m%y},,,R",
        f"GPGST,{hms},0.02,0.015,0.010,45.0,0.012,0.011,0.025",
        "GPGSV,1,1,04,01,40,083,46,02,17,308,41,12,07,344,39,14,22,228,45",
        f"GNGLL,{at},{hms},A,R",
        "GNVTG,,T,,M,0.0,N,0.0,K,R",
        "GPTXT,01,01,02,ANTENNA OK")]


def binary(rng: random.Random, size: int) -> bytes:
    return bytes(rng.choice(JUNK_BYTES) for _ in range(size))


def clean_frame(make: Callable[[], bytes]) -> bytes:
    """A binary frame drawn again until it has no byte of NOT_IN_JUNK (length, checksum)."""
    while True:
        frame = make()
        if not set(frame) & set(NOT_IN_JUNK):
            return frame


def ubx_frame(rng: random.Random) -> bytes:
    """UBX NAV-PVT: sync chars, class/id, length, 92 bytes of payload, Fletcher checksum."""
    body = b"\x01\x07" + (92).to_bytes(2, "little") + binary(rng, 92)
    a = b = 0
    for byte in body:
        a = (a + byte) & 0xFF
        b = (b + a) & 0xFF
    return b"\xb5\x62" + body + bytes([a, b])


def rtcm3_frame(rng: random.Random) -> bytes:
    """RTCM 3 message 1005: 0xD3 preamble, 10-bit length, 19 bytes, CRC-24Q."""
    frame = b"\xd3\x00\x13\x3e\xd0" + binary(rng, 17)
    crc = 0
    for byte in frame:
        crc ^= byte << 16
        for _ in range(8):
            crc = (crc << 1) ^ (0x1864CFB if crc & 0x800000 else 0)
    return frame + (crc & 0xFFFFFF).to_bytes(3, "big")


def mixed_stream(epochs: int, step_s: float) -> tuple[bytes, int]:
    """`epochs` epochs of standard and proprietary sentences with junk of every kind
    between them, and how many of the bytes are junk."""
    rng = random.Random(7)
    parts: list[tuple[bytes, bool]] = []  # (bytes, junk?)
    for k in range(epochs):
        gga, rmc, gst, *unused = epoch_sentences(k, step_s)
        vendor = [(line + CRLF, False) for line in VENDOR_LINES.values()]
        parts += [
            (clean_frame(lambda: ubx_frame(rng)), True), (gga, False),  # binary, then '$'
            (rmc, False),
            (b"\x00" * 16, True), (CRLF, False),
            (gga[:-2].replace(b",0.6,", b",\x000.6,"), True), (CRLF, False),  # checksum holds
            (clean_frame(lambda: rtcm3_frame(rng)), True), *vendor[:3],
            (b"$GNGGA,0815", False), (CRLF, False),  # cut short: no checksum
            (gst, False),
            (binary(rng, 200), True), (CRLF, False),
            *vendor[3:],
            (b"$GPTXT,01,01,02,ANTENNA \xc3\x96K*00", True), (CRLF, False),  # not ASCII
            (b"$GNGSV," + b"1," * 150 + b"*00", False), (CRLF, False),  # too long
            *[(line, False) for line in unused],
        ]
    return b"".join(data for data, _ in parts), sum(len(data) for data, junk in parts if junk)


def junk_stats(epochs: int, junk: int) -> dict[str, int]:
    """What the decoder must count in mixed_stream(epochs)."""
    return {"sentences": epochs * (3 + len(UNUSED) + len(VENDOR_LINES)), "junk_bytes": junk,
            "no_checksum": epochs, "too_long": epochs,
            **{f"proprietary:{code}": epochs for code in VENDOR_LINES},
            **{f"ignored:{kind}": epochs for kind in UNUSED}}


def test_binary_frames_nuls_cut_and_long_lines_leave_every_sentence_decodable() -> None:
    data, junk = mixed_stream(5, 1.0)
    fixes, stats = decode_capture(data)
    assert dict(stats) == junk_stats(5, junk)
    assert [f.time_of_day for f in fixes] == [f"08:15:0{k}+00:00" for k in range(5)]
    assert all(f.quality == 4 and f.lat == pytest.approx(dm(34, 45.1234567)) for f in fixes)
    # Byte by byte as a serial port may deliver it: the same sentences, the same counts.
    decoder = NmeaDecoder()
    interpreter = GnssInterpreter("rx", decoder.stats)
    samples: list[Sample] = []
    for start in range(0, len(data), 7):
        for sentence in decoder.feed(data[start:start + 7], 0, 0):
            samples += interpreter.interpret(sentence)[0]
    assert decoder.stats == stats
    assert Counter(s.channel for s in samples)["sigma_lat"] == 5
    assert Counter(s.channel for s in samples)["rmc_valid"] == 5


PIECES = [
    *VENDOR_LINES.values(), *epoch_sentences(0, 1.0), b"\r\n", b"\n", b"\r", b"$", b"*", b",",
    b"#", b"!AIVDM,1,1,,A,13aEOK?P00PD2wVMdLDRhgvL289?,0*26", b"\x00\x00", b"\xb5\x62",
    b"\xd3\x00", *(nmea(body).encode() for body in (
        "PUBX", "PASHR", "PTNL", "PGRM", "PSRF", "PMTK", "CCGPQ,GGA", "GPGGA,,,,,,9",
        "GPGGA,1,2,N,3,E,1", "GPZDA,99,99,99,9999", "GPRMC,1,A,,,,,,,311399", "GNGNS,,,,,,XQ",
        "GPGST,,nan,inf", "WIMWV,1,Q,2,Z,A", "WIMDA,x,I,y,B"))]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=60), st.sampled_from(PIECES)), max_size=30))
def test_no_input_makes_the_decoder_or_an_interpreter_raise(pieces: list[bytes]) -> None:
    decoder = NmeaDecoder()
    gnss, met = GnssInterpreter("rx", decoder.stats), MetInterpreter("ws", decoder.stats)
    for sentence in decoder.feed(b"".join(pieces), 0, 0):
        assert sentence.kind.isalnum()
        gnss.interpret(sentence)
        met.interpret(sentence)
    decoder.flush()


@pytest.mark.parametrize(("line", "kind"), [
    ("$PMTK010,001*2E", "PMTK"),
    (VENDOR_LINES["UBX"].decode(), "PUBX"),  # pynmea2's UBX00: no sentence_type at all
    ("$PGRME,7.6,M,41.7,M,42.4,M*2F", "PGRM"),
    (nmea("CCGPQ,GGA").strip(), "GGA"),
    (epoch_sentences(0, 1.0)[0].decode().strip(), "GGA"),
])
def test_sentence_kind_never_raises(line: str, kind: str) -> None:
    assert Sentence(pynmea2.parse(line), line, 0, 0).kind == kind


# --- the reader ----------------------------------------------------------------------


class FlakyInterpreter(GnssInterpreter):
    """Raises on every RMC, as an interpreter bug meeting unforeseen input would."""

    def _on_rmc(self, sentence: Sentence) -> tuple[list[Sample], None]:
        raise ZeroDivisionError(f"bug on {sentence.raw * 2}")  # longer than a log line takes


def test_an_interpreter_that_raises_costs_one_sentence_counted_and_logged_sparingly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoder = NmeaDecoder()
    reader = NmeaReader("rx", StreamSettings(transport="file", path=tmp_path / "unused"),
                        SampleBus(), FlakyInterpreter("rx", decoder.stats), decoder)
    fixes: list[Fix] = []
    reader.fix_listeners.append(lambda _name, fix: fixes.append(fix))
    clock = [0.0]  # the monotonic clock, seconds
    monkeypatch.setattr(nmea_reader, "now_stamps", lambda: (0, int(clock[0] * 1e9)))
    with structlog.testing.capture_logs() as logs:
        for k, at in enumerate([0.0, 1.0, 2.0, LOG_EVERY_S + 0.5, LOG_EVERY_S + 1.0]):
            clock[0] = at
            gga, rmc, *_ = epoch_sentences(k, 1.0)
            reader.feed(rmc + gga)  # the GGA after the failing RMC still counts
    assert [f.time_of_day for f in fixes] == [f"08:15:0{k}+00:00" for k in range(5)]
    assert [(line["log_level"], line["not_logged_before"]) for line in logs] == [
        ("error", 0), ("error", 2)]  # once, then again after LOG_EVERY_S with the tally
    assert logs[0]["failure"] == "RMC: ZeroDivisionError"
    assert len(logs[0]["error"]) == LOGGED_CHARS and logs[0]["sentence"].startswith("$GNRMC")
    health = reader.health()
    json.dumps(health)
    last_error = health.pop("last_error")
    assert health == {"connected": False, "reconnects": 0, "sentences": 10, "rejected": {},
                      "interpret_errors": 5}
    assert last_error.startswith("RMC: ZeroDivisionError: bug on $GNRMC,081504.00")


@dataclass
class FixCounter:
    """A fix listener a test awaits (instead of polling) until enough fixes came."""

    fixes: list[Fix] = field(default_factory=list)
    _waiting: list[tuple[int, asyncio.Event]] = field(default_factory=list)

    def __call__(self, _name: str, fix: Fix) -> None:
        self.fixes.append(fix)
        for count, event in self._waiting:
            if len(self.fixes) >= count:
                event.set()

    async def reached(self, count: int, timeout_s: float = 10.0) -> None:
        if len(self.fixes) >= count:
            return
        event = asyncio.Event()
        self._waiting.append((count, event))
        await asyncio.wait_for(event.wait(), timeout_s)


EPOCHS = 10  # at 10 Hz: the replayed capture loops every second


async def test_the_daemon_reads_a_pty_full_of_junk_and_keeps_recording_fixes(
    make_config: Callable[..., StationConfig], tmp_path: Path
) -> None:
    capture = tmp_path / "mixed.nmea"
    capture.write_bytes(mixed_stream(EPOCHS, 0.1)[0])
    config = make_config(extra=f"""
[gnss.rx]
port = "{tmp_path / 'dev' / 'gnss'}"
reconnect_min_s = 0.1
reconnect_max_s = 0.2
[sim.gnss.rx]
replay = "{capture}"
""")
    counter = FixCounter()
    async with SimStation(config) as sim, running_daemon(config) as daemon:
        reader = daemon.site.gnss["rx"]
        reader.fix_listeners.append(counter)
        await counter.reached(EPOCHS + 2)  # through the whole capture and round again
        before = reader.health()
        await sim.gnss("rx").unplug(0.3)
        await counter.reached(len(counter.fixes) + 3)  # back, and on with the fixes
        after = reader.health()
        seen = len(counter.fixes)
    assert {f.quality for f in counter.fixes} == {4}
    assert before["connected"] and before["reconnects"] == 0
    assert before["interpret_errors"] == 0 and before["last_error"] is None
    rejected = before["rejected"]
    assert {f"proprietary:{code}" for code in VENDOR_LINES} <= set(rejected)
    assert rejected["junk_bytes"] > 0 and rejected["too_long"] > 0
    assert rejected["no_checksum"] > 0 and "malformed" not in rejected
    assert after["connected"] and after["reconnects"] == 1
    assert after["sentences"] > before["sentences"] and after["interpret_errors"] == 0
    stored = store_rows(config, "SELECT count(*) FROM samples_v WHERE device = 'rx' "
                                "AND channel = 'lat' AND quality = 'ok'")[0][0]
    assert stored >= seen
