"""The GNSS receiver and weather simulators on real ptys and sockets, read back with
pynmea2 (strict checksums), the daemon's own NMEA decoder, and a pymodbus master."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import signal
import sys
import termios
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pynmea2
import pytest
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient

from acquisition.config.station import StationConfig, load_config
from acquisition.geodesy import offset_to_degrees
from drivers.gnss import Fix, GnssInterpreter
from drivers.met import MetInterpreter
from drivers.nmea import NmeaDecoder, Sentence
from simulators.gnss import QUALITIES, Position, SimulatedGnss
from simulators.met import NmeaMet, SimulatedAnemometer
from simulators.nmea_out import GNSS_SENTENCES, Epoch, mda, mwv
from simulators.settings import GnssSim, MetSim, SimConfigError
from simulators.station import SimStation
from simulators.wind import WindModel
from tests.stations import free_port, write_station

REPO = Path(__file__).resolve().parent.parent
TRUE = Position(-33.8568, 151.2153, 42.0)  # southern and eastern hemispheres
STILL_AIR = "gust_m_s = 0\ndirection_drift_deg_per_min = 0\n"
LISTEN_TIMEOUT_S = 10.0


def nmea_station(tmp_path: Path, sim: str = "") -> StationConfig:
    """The MFC test station plus a GNSS receiver on a pty and one on TCP, an NMEA weather
    station on a pty and a Modbus anemometer on the MFCs' line; `sim` adds [sim.*] tables."""
    return load_config(write_station(tmp_path, extra=f"""
[gnss.rx]
port = "{tmp_path / 'dev' / 'rx'}"
[gnss.rx_tcp]
transport = "tcp"
host = "127.0.0.1"
tcp_port = {free_port()}
[met.ws]
protocol = "nmea"
port = "{tmp_path / 'dev' / 'ws'}"
[met.anemo]
protocol = "modbus"
line = "bus0"
unit_id = 10
[sim.gnss.rx]
latitude = {TRUE.latitude}
longitude = {TRUE.longitude}
altitude_m = {TRUE.altitude_m}
rate_hz = 5
{sim}
"""))


@dataclass
class Listener:
    """Decodes what a port sends exactly as the daemon does, noting when each chunk came."""

    decoder: NmeaDecoder = field(default_factory=NmeaDecoder)
    sentences: list[Sentence] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)
    raw: bytearray = field(default_factory=bytearray)
    hung_up: bool = False
    _news: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def __post_init__(self) -> None:
        self.gnss = GnssInterpreter("rx", self.decoder.stats)
        self.met = MetInterpreter("ws", self.decoder.stats)

    @property
    def stats(self) -> Counter[str]:
        return self.decoder.stats

    def feed(self, data: bytes, t_ns: int | None = None) -> None:
        self.raw += data
        stamp = time.time_ns() if t_ns is None else t_ns
        for sentence in self.decoder.feed(data, stamp, time.monotonic_ns()):
            self.sentences.append(sentence)
            interpreter = self.met if sentence.message.talker == "WI" else self.gnss
            samples, fix = interpreter.interpret(sentence)
            for sample in samples:
                self.samples.setdefault(sample.channel, []).append(sample.value)
            if fix is not None:
                self.fixes.append(fix)
        self._news.set()

    def hang_up(self) -> None:
        self.hung_up = True
        self._news.set()

    def kinds(self) -> Counter[str]:
        return Counter(s.kind for s in self.sentences)

    async def until(self, condition: Callable[[Listener], object]) -> None:
        """Return once `condition(self)` holds: checked now and after every chunk heard."""
        try:
            async with asyncio.timeout(LISTEN_TIMEOUT_S):
                while not condition(self):
                    self._news.clear()
                    await self._news.wait()
        except TimeoutError:
            raise AssertionError(f"not heard within {LISTEN_TIMEOUT_S} s: {self.kinds()}, "
                                 f"{dict(self.stats)}, hung up: {self.hung_up}") from None


Until = Callable[[Listener], object]


def epochs(count: int, last: str) -> Until:
    """Until `count` whole epochs were heard: bursts ending with a `last` sentence."""
    return lambda listener: listener.kinds()[last] >= count


@asynccontextmanager
async def reading_pty(path: Path | str, *, flush: bool = True) -> AsyncIterator[Listener]:
    """The port open as a client would have it, every chunk fed to the Listener as it comes;
    `flush`: drop what was sent before the port was opened (counts start at a known moment)."""
    listener = Listener()
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    if flush:
        termios.tcflush(fd, termios.TCIFLUSH)
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:  # EIO: the port went away under us
            data = b""
        if data:
            listener.feed(data)
        else:
            listener.hang_up()
            loop.remove_reader(fd)

    loop.add_reader(fd, readable)
    try:
        yield listener
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def listen_pty(path: Path | str, until: Until, *, flush: bool = True) -> Listener:
    """What a client opening the port hears, up to the moment `until(listener)` holds."""
    async with reading_pty(path, flush=flush) as listener:
        await listener.until(until)
    return listener


async def listen_tcp(config: StationConfig, name: str, until: Until) -> Listener:
    """What a client connecting to the receiver's TCP port hears, until `until` holds."""
    settings = config.gnss[name]
    listener = Listener()
    reader, writer = await asyncio.open_connection(settings.host, settings.tcp_port)

    async def read() -> None:
        while data := await reader.read(4096):
            listener.feed(data)
        listener.hang_up()

    reading = asyncio.create_task(read(), name=f"listen {name}")
    try:
        await listener.until(until)
    finally:
        reading.cancel()
        await asyncio.wait({reading})
        writer.close()
    return listener


def strictly_parsed(listener: Listener) -> list[pynmea2.NMEASentence]:
    """Every line received, through pynmea2 with checksums enforced."""
    lines = bytes(listener.raw).decode("ascii").split("\r\n")
    assert lines[-1] == "" or not lines[-1].startswith("$")  # CRLF after every sentence
    return [pynmea2.parse(line, check=True) for line in lines if line.startswith("$")]


def linked(path: str | None) -> bool:
    """Whether the port's symlink is there (an lstat on tmpfs: fine in async code)."""
    return os.path.islink(path or "")


def offsets_m(fixes: list[Fix], true: Position) -> tuple[np.ndarray, np.ndarray]:
    """North and east offsets of fixes from the true position, metres."""
    metre_lat, metre_lon = offset_to_degrees(true.latitude, 1.0, 1.0)
    north = np.array([(f.lat or 0) - true.latitude for f in fixes]) / metre_lat
    east = np.array([(f.lon or 0) - true.longitude for f in fixes]) / metre_lon
    return north, east


# --- sentences and models, no I/O ----------------------------------------------------


@pytest.mark.parametrize("quality", list(QUALITIES))
@pytest.mark.parametrize("talker", ["GP", "GN", "BD"])
def test_every_sentence_decodes_strictly_and_as_the_driver_reads_it(
    quality: str, talker: str
) -> None:
    settings = GnssSim(fix_quality=quality, talker=talker,  # type: ignore[arg-type]
                       sentences=tuple(GNSS_SENTENCES))  # type: ignore[arg-type]
    receiver = SimulatedGnss("rx", None, settings, TRUE, np.random.default_rng(1))  # type: ignore[arg-type]
    host = 1_795_508_099.995  # 2026-11-24T08:14:59.995Z: rounds up to 08:15:00.00
    burst = receiver.burst(host)
    assert [line[3:6].decode() for line in burst] == list(GNSS_SENTENCES)
    for line in burst:
        assert line.startswith(f"${talker}".encode()) and line.endswith(b"\r\n")
        pynmea2.parse(line.decode().strip(), check=True)
    listener = Listener()
    listener.feed(b"".join(burst), t_ns=int(host * 1e9))
    assert listener.stats["sentences"] == 6 and not listener.stats["malformed"], listener.stats
    gga, gns = listener.fixes
    code = QUALITIES[quality].code
    assert gga.quality == gns.quality == code
    assert gns.utc == "2026-11-24T08:15:00+00:00"  # date from RMC/ZDA, same rounding
    assert listener.gnss.clock_offset_s == pytest.approx(0.005, abs=1e-6)
    if code == 0:
        assert gga.lat is None and listener.samples["rmc_valid"] == [0.0]
        assert "sigma_lat" not in listener.samples
        return
    sigma = QUALITIES[quality].sigma_h_m or 0.0
    assert gga.lat == pytest.approx(TRUE.latitude, abs=6 * sigma / 111_000)
    assert gga.lon == pytest.approx(TRUE.longitude, abs=6 * sigma / 92_000)
    assert gga.alt == pytest.approx(TRUE.altitude_m, abs=9 * sigma)
    assert (gga.lat, gga.lon) == (gns.lat, gns.lon)
    assert listener.samples["sigma_lat"] == [round(sigma, 3)]
    assert listener.samples["sigma_alt"] == [round(1.5 * sigma, 3)]
    assert listener.samples["rmc_valid"] == [1.0]
    assert 4 <= (gga.sats or 0) <= 30 and 0.3 < (gga.hdop or 0) < 2.0


def test_coordinates_are_ddmm_with_hemisphere_and_never_sixty_minutes() -> None:
    settings = GnssSim(sentences=("GGA",))
    receiver = SimulatedGnss("rx", None, settings, Position(0, 0, 0),  # type: ignore[arg-type]
                             np.random.default_rng(0))
    epoch = receiver.epoch(0.0)
    fields = {
        (-0.99999999999, -179.9999999999): ("0100.0000000", "S", "18000.0000000", "W"),
        (45.5, 7.25): ("4530.0000000", "N", "00715.0000000", "E"),
    }
    for (lat, lon), expected in fields.items():
        line = GNSS_SENTENCES["GGA"]("GN", Epoch(**{**epoch.__dict__, "lat": lat, "lon": lon}))
        assert tuple(line.decode().split(",")[2:6]) == expected


@pytest.mark.parametrize("quality", ["autonomous", "dgnss", "rtk_float", "rtk_fixed"])
def test_position_noise_matches_the_quality_and_what_gst_says(quality: str) -> None:
    receiver = SimulatedGnss("rx", None, GnssSim(fix_quality=quality),  # type: ignore[arg-type]
                             TRUE, np.random.default_rng(5))
    epochs = [receiver.epoch(float(t)) for t in range(3000)]
    sigma = QUALITIES[quality].sigma_h_m
    fixes = [Fix(0, None, None, e.lat, e.lon, e.alt, e.quality, "", e.sats, e.hdop, "GN")
             for e in epochs]
    north, east = offsets_m(fixes, TRUE)
    up = np.array([e.alt for e in epochs]) - TRUE.altitude_m
    assert {e.sigma_h for e in epochs} == {sigma}
    for axis, expected in ((north, sigma), (east, sigma), (up, 1.5 * (sigma or 0))):
        assert axis.std() == pytest.approx(expected, rel=0.06)
        assert abs(axis.mean()) < 4 * (expected or 0) / math.sqrt(len(axis))


def test_met_sentences_decode_strictly() -> None:
    for line in (mwv(359.96, 12.345), mda(987.6, -5.25, 0.04, 3.0)):
        assert line.endswith(b"\r\n")
        pynmea2.parse(line.decode().strip(), check=True)
    listener = Listener()
    listener.feed(mwv(359.96, 12.345) + mda(987.6, -5.25, 0.04, 3.0))
    assert not listener.stats["malformed"]
    assert listener.samples == {
        "wind_direction": [0.0, 0.0], "wind_speed": [12.3, 3.0],
        "air_pressure": [pytest.approx(987.6)], "air_temperature": [-5.2],
    }


def test_wind_model_gusts_drift_and_settable_mean() -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    wind = WindModel(MetSim(gust_m_s=0.8, direction_drift_deg_per_min=2.0),
                     np.random.default_rng(3), clock)
    speeds = []
    for _ in range(20_000):
        now[0] += 1.0
        speeds.append(wind.true_wind().speed_m_s)
    assert np.mean(speeds) == pytest.approx(3.0 + 0.8**2 / 6, abs=0.05)  # across gusts add
    assert np.std(speeds) == pytest.approx(0.8, rel=0.1)
    assert np.corrcoef(speeds[:-1], speeds[1:])[0, 1] == pytest.approx(math.exp(-1 / 4), abs=0.03)
    assert wind.direction_deg == pytest.approx((270 + 2 * 20_000 / 60) % 360)
    calm = WindModel(MetSim(gust_m_s=0, direction_deg=10, direction_drift_deg_per_min=-3),
                     np.random.default_rng(3), clock)
    now[0] += 300  # 5 minutes at -3 deg/min: 10 -> 355
    assert (calm.true_wind().speed_m_s, calm.true_wind().direction_deg) == (3.0, 355.0)
    calm.speed_m_s, calm.direction_deg = 17.5, 400
    assert calm.true_wind().speed_m_s == 17.5 and calm.direction_deg == 40.0


def test_sim_gnss_and_met_tables_are_validated(tmp_path: Path) -> None:
    cases = {
        "[sim.gnss.rx]\nlatitud = 1": r"sim\.gnss\.rx\.latitud: unknown key",
        "[sim.gnss.nobody]\nrate_hz = 2": r"sim\.gnss\.nobody: no GNSS receiver named",
        "[sim.gnss.rx]\nrate_hz = 20": r"sim\.gnss\.rx\.rate_hz",
        "[sim.gnss.rx]\ntalker = \"GX\"": r"sim\.gnss\.rx\.talker",
        "[sim.gnss.rx]\nsentences = [\"GGA\", \"GSV\"]": r"sim\.gnss\.rx\.sentences\.1",
        "[sim.gnss.rx]\nfix_quality = \"rtk\"": r"sim\.gnss\.rx\.fix_quality",
        "[sim.gnss.rx]\nlatitude = 10.0": "both `latitude` and `longitude`",
        "[sim.gnss.rx]\nfix_loss_every_s = 5": "both `fix_loss_every_s`",
        "[sim.gnss.rx]\nfix_loss_every_s = 5\nfix_loss_duration_s = 5": "must be shorter",
        "[sim.gnss.rx]\ncorrupt_fraction = 1.5": r"sim\.gnss\.rx\.corrupt_fraction",
        f"[sim.gnss.rx]\nreplay = \"{tmp_path}\"\nrate_hz = 2": r"remove rate_hz",
        "[sim.gnss.rx]\nreplay = \"missing.nmea\"": r"sim\.gnss\.rx\.replay: no capture file",
        "[sim.met.ws]\ngust_m_s = -1": r"sim\.met\.ws\.gust_m_s",
        "[sim.met.anemo]\nrate_hz = 2": r"sim\.met\.anemo\.rate_hz: a Modbus anemometer",
        "[sim.met.nobody]\nseed = 1": r"sim\.met\.nobody: no met device named",
    }
    for table, message in cases.items():
        config = load_config(write_station(tmp_path, extra=f"""
[gnss.rx]
port = "{tmp_path / 'rx'}"
[met.ws]
protocol = "nmea"
port = "{tmp_path / 'ws'}"
[met.anemo]
protocol = "modbus"
line = "bus0"
unit_id = 10
{table}"""))
        with pytest.raises(SimConfigError, match=message):
            SimStation(config, base=tmp_path)


# --- GNSS over a pty -----------------------------------------------------------------


async def test_rtk_fixed_receiver_on_a_pty(tmp_path: Path) -> None:
    config = nmea_station(tmp_path, sim="sentences = [\"GGA\", \"RMC\", \"GNS\", \"GST\", "
                          "\"ZDA\", \"GSA\"]")
    async with SimStation(config) as sim:
        heard = await listen_pty(config.gnss["rx"].port or "", epochs(10, "GSA"))
        receiver = sim.gnss("rx")
    assert isinstance(receiver, SimulatedGnss) and receiver.sentences_sent > 0
    strict = strictly_parsed(heard)
    assert len(strict) == len(heard.sentences) == heard.stats["sentences"]
    assert heard.stats["sentences"] == sum(heard.stats.values())  # nothing rejected
    kinds = heard.kinds()
    assert set(kinds) == {"GGA", "RMC", "GNS", "GST", "ZDA", "GSA"}
    assert all(line.startswith(b"$GN") for line in bytes(heard.raw).splitlines())
    # rate: the epochs are 0.2 s apart in receiver UTC and arrive 5 per second.
    ggas = [s for s in heard.sentences if s.kind == "GGA"]
    assert 9 <= len(ggas) <= 11
    stamps = [s.message.timestamp for s in ggas]
    steps = {round((b.second - a.second) % 60 + (b.microsecond - a.microsecond) / 1e6, 3)
             for a, b in itertools.pairwise(stamps)}
    assert steps == {0.2}
    arrival = (ggas[-1].mono_ns - ggas[0].mono_ns) / 1e9 / (len(ggas) - 1)
    assert arrival == pytest.approx(0.2, rel=0.1)
    assert all(s.raw.split(",")[1][-3] == "." for s in ggas)  # hhmmss.ss
    # position: RTK fixed, centimetre noise around the true antenna position.
    fixes = [f for f in heard.fixes if f.talker == "GN"]
    assert {f.quality for f in fixes} == {4}
    north, east = offsets_m(fixes, TRUE)
    assert abs(north.mean()) < 0.025 and abs(east.mean()) < 0.025
    assert np.hypot(north, east).max() < 0.1
    alts = np.array([f.alt for f in fixes])
    assert abs(alts.mean() - TRUE.altitude_m) < 0.04
    assert set(heard.samples["sigma_lat"]) == {0.015}
    assert heard.gnss.clock_offset_s is not None and abs(heard.gnss.clock_offset_s) < 0.05
    assert not linked(config.gnss["rx"].port)  # stop removed the link


async def test_fix_loss_episodes_and_quality_set_at_run_time(tmp_path: Path) -> None:
    config = nmea_station(tmp_path, sim="talker = \"GP\"\nfix_loss_every_s = 1.0\n"
                          "fix_loss_duration_s = 0.4\nfix_quality = \"dgnss\"\n"
                          "sentences = [\"GGA\", \"RMC\"]")
    async with SimStation(config) as sim:
        # Ten epochs at 5 Hz: two whole loss cycles (1.0 s), 0.4 s of each without a fix.
        heard = await listen_pty(config.gnss["rx"].port or "", epochs(10, "RMC"))
        receiver = sim.gnss("rx")
        assert isinstance(receiver, SimulatedGnss)
        receiver.set_quality("none")
        lost = await listen_pty(config.gnss["rx"].port or "", epochs(3, "RMC"))
        with pytest.raises(ValueError, match="unknown fix quality"):
            receiver.set_quality("superb")
    assert {f.talker for f in heard.fixes} == {"GP"}
    qualities = Counter(f.quality for f in heard.fixes)
    assert set(qualities) == {0, 2}
    assert qualities[0] / len(heard.fixes) == pytest.approx(0.4, abs=0.15)
    assert all((f.lat is None) == (f.quality == 0) for f in heard.fixes)
    assert all(f.alt is None for f in heard.fixes if f.quality == 0)
    rmc = [s.message for s in heard.sentences if s.kind == "RMC"]
    assert {m.status for m in rmc} == {"A", "V"}
    assert all(m.lat == "" for m in rmc if m.status == "V")
    assert lost.fixes and {f.quality for f in lost.fixes} == {0}


async def test_corrupted_checksums_and_binary_junk_are_counted(tmp_path: Path) -> None:
    config = nmea_station(tmp_path, sim="corrupt_fraction = 0.3\njunk = true\nseed = 4")
    async with SimStation(config) as sim:
        # Ten epochs of five sentences, good or bad (a corrupted GSA cannot mark an epoch).
        heard = await listen_pty(config.gnss["rx"].port or "", lambda listener: (
            listener.stats["sentences"] + listener.stats["bad_checksum"] >= 50))
        receiver = sim.gnss("rx")
    bad, good = heard.stats["bad_checksum"], heard.stats["sentences"]
    assert bad / (bad + good) == pytest.approx(0.3, abs=0.15)
    assert 0.15 < receiver.sentences_corrupted / receiver.sentences_sent < 0.45
    assert bad <= receiver.sentences_corrupted and bad + good <= receiver.sentences_sent
    assert heard.stats["junk_bytes"] > 0 and b"\xb5\x62\x01\x07" in heard.raw
    assert not heard.stats["malformed"]
    assert {f.quality for f in heard.fixes} == {4}


async def test_a_late_client_gets_at_most_one_stale_epoch(tmp_path: Path) -> None:
    config = nmea_station(tmp_path)
    async with SimStation(config) as sim:
        receiver = sim.gnss("rx")
        await asyncio.wait_for(receiver.until(lambda: receiver.sentences_sent >= 5 * 5),
                               5)  # five epochs nobody reads
        opened = time.time()
        heard = await listen_pty(config.gnss["rx"].port or "",
                                 lambda listener: listener.sentences, flush=False)
        assert sim.gnss("rx").sentences_sent >= 5 * 5
    first = heard.sentences[0].message.timestamp
    sent = first.hour * 3600 + first.minute * 60 + first.second + first.microsecond / 1e6
    assert 0 <= (opened % 86_400) - sent < 0.2 + 0.05  # the epoch just before opening


async def test_unplug_and_replug_the_receiver(tmp_path: Path) -> None:
    config = nmea_station(tmp_path)
    port = config.gnss["rx"].port or ""
    async with SimStation(config) as sim:
        receiver = sim.gnss("rx")
        before = os.readlink(port)
        async with reading_pty(port) as old:
            await old.until(lambda listener: listener.fixes)
            unplug = asyncio.create_task(receiver.unplug(0.6))
            await asyncio.wait_for(receiver.port.unplugged.wait(), 5)
            assert not linked(port)
            sent_while_unplugged = receiver.sentences_sent
            await old.until(lambda listener: listener.hung_up)
        await unplug  # 0.6 s of real time: the scenario, not a wait for something to happen
        assert receiver.sentences_sent == sent_while_unplugged  # said nothing meanwhile
        assert os.readlink(port) != before
        again = await listen_pty(port, epochs(3, "GSA"))
    assert old.hung_up and old.fixes
    assert again.fixes and {f.quality for f in again.fixes} == {4}


# --- GNSS over TCP -------------------------------------------------------------------


async def test_tcp_receiver_streams_to_every_client(tmp_path: Path) -> None:
    config = nmea_station(tmp_path, sim="""
[sim.gnss.rx_tcp]
talker = "BD"
rate_hz = 2
clock_offset_s = 3.25
fix_quality = "rtk_float"
sentences = ["GNS", "ZDA"]
""")
    async with SimStation(config) as sim:
        first, second = await asyncio.gather(listen_tcp(config, "rx_tcp", epochs(3, "ZDA")),
                                             listen_tcp(config, "rx_tcp", epochs(3, "ZDA")))
        receiver = sim.gnss("rx_tcp")
        assert isinstance(receiver, SimulatedGnss)
        receiver.true_position = TRUE
        moved = await listen_tcp(config, "rx_tcp", epochs(2, "ZDA"))
    for heard in (first, second):
        assert len(heard.fixes) >= 2 and {f.talker for f in heard.fixes} == {"BD"}
        assert {f.quality for f in heard.fixes} == {5}  # GNS mode F: RTK float
        assert heard.gnss.clock_offset_s == pytest.approx(3.25, abs=0.05)
        strictly_parsed(heard)
    assert [f.lat for f in first.fixes] == [f.lat for f in second.fixes][: len(first.fixes)]
    assert first.fixes[0].lat == pytest.approx(34.752057, abs=1e-4)  # the default position
    north, east = offsets_m(moved.fixes, TRUE)
    assert np.hypot(north, east).max() < 2.0  # rtk_float: 0.3 m per axis


# --- replay of a capture -------------------------------------------------------------


def _checksum(body: str) -> int:
    value = 0
    for char in body:
        value ^= ord(char)
    return value


async def test_replay_follows_the_capture_times_and_loops(tmp_path: Path) -> None:
    times = ["235959.20", "235959.70", "000000.20"]  # across midnight, 0.5 s apart
    lines = ["# captured by a test", ""]
    for stamp, date in zip(times, ["241126", "241126", "251126"], strict=True):
        lines += [f"${b}*{_checksum(b):02X}" for b in (
            f"GPGGA,{stamp},3345.1234,S,15112.9180,E,1,08,1.0,42.0,M,,,,",
            "GPGSA,A,3,01,02,03,04,,,,,,,,,1.8,1.0,1.5",
            f"GPRMC,{stamp},A,3345.1234,S,15112.9180,E,0.0,,{date},,,A")]
    lines.append("$GPGGA,bad checksum*00")
    capture = tmp_path / "capture.nmea"
    capture.write_text("\n".join(lines) + "\n")
    config = nmea_station(tmp_path, sim=f"""
[sim.gnss.rx_tcp]
replay = "{capture.name}"
""")
    sent = [line for line in lines if line.startswith("$")]
    async with SimStation(config, base=tmp_path) as sim:
        # Twice the capture's lines: from wherever the replay is, through a loop.
        heard = await listen_tcp(config, "rx_tcp", lambda listener: (
            listener.raw.count(b"\r\n") >= 2 * len(sent)))
        replay = sim.gnss("rx_tcp")
        described = sim.describe()
    assert any(line.startswith("rx_tcp gnss replay=") for line in described)
    # The replay starts at once: a client connecting later joins it where it is.
    received = bytes(heard.raw).decode().split("\r\n")
    start = sent.index(received[0])
    looped = (sent * 3)[start : start + 2 * len(sent)]
    assert received[: len(looped)] == looped  # verbatim, comments and blank lines left out
    ggas = [s for s in heard.sentences if s.kind == "GGA"]
    first = times.index(ggas[0].raw.split(",")[1])
    assert [s.raw.split(",")[1] for s in ggas[:4]] == [times[(first + k) % 3] for k in range(4)]
    gaps = [(b.mono_ns - a.mono_ns) / 1e9 for a, b in itertools.pairwise(ggas)]
    assert gaps[:3] == pytest.approx([0.5, 0.5, 0.5], abs=0.05)  # loops one interval on
    assert heard.stats["bad_checksum"] >= 1
    assert getattr(replay, "loops", 0) >= 1


# --- weather -------------------------------------------------------------------------


async def test_nmea_weather_station_reports_the_true_wind(tmp_path: Path) -> None:
    config = nmea_station(tmp_path, sim=f"""
[sim.met.ws]
rate_hz = 4
wind_speed_m_s = 4.5
direction_deg = 200
temperature_c = 31.5
pressure_hpa = 1001.5
{STILL_AIR}""")
    async with SimStation(config) as sim:
        station = sim.met("ws")
        heard = await listen_pty(config.met["ws"].port or "", epochs(4, "MDA"))
        assert isinstance(station, NmeaMet)
        station.wind.speed_m_s, station.wind.direction_deg = 21.0, 90
        windy = await listen_pty(config.met["ws"].port or "", epochs(2, "MDA"))
        true = station.true_wind()
    strict = strictly_parsed(heard)
    assert {m.sentence_type for m in strict} == {"MWV", "MDA"} and len(strict) >= 8
    assert all(m.talker == "WI" for m in strict)
    assert all(m.reference == "T" and m.wind_speed_units == "M" and m.status == "A"
               for m in strict if m.sentence_type == "MWV")
    assert set(heard.samples["wind_speed"]) == {4.5}
    assert set(heard.samples["wind_direction"]) == {200.0}
    assert set(heard.samples["air_temperature"]) == {31.5}
    assert heard.samples["air_pressure"] == pytest.approx([1001.5] * len(strict[1::2]), abs=0.01)
    assert (true.speed_m_s, true.direction_deg) == (21.0, 90.0)
    assert set(windy.samples["wind_speed"]) == {21.0}


async def test_modbus_anemometer_shares_the_line_with_the_mfcs(tmp_path: Path) -> None:
    config = nmea_station(tmp_path, sim=f"""
[sim.met.anemo]
wind_speed_m_s = 6.2
direction_deg = 359.97
{STILL_AIR}""")
    async with SimStation(config) as sim:
        anemometer = sim.met("anemo")
        assert isinstance(anemometer, SimulatedAnemometer)
        assert f"anemo profile=anemometer unit=10 line=bus0 at={config.lines['bus0'].port}" in (
            sim.describe())
        client = AsyncModbusSerialClient(config.lines["bus0"].port or "", framer=FramerType.RTU,
                                         baudrate=115200, timeout=0.3, retries=0)
        assert await client.connect()
        try:
            calm = await client.read_holding_registers(0, count=2, device_id=10)
            anemometer.wind.speed_m_s, anemometer.wind.direction_deg = 18.35, 45.0
            windy = await client.read_holding_registers(0, count=2, device_id=10)
            refused = await client.write_register(0, 5, device_id=10)
            neighbour = await client.read_holding_registers(1208, count=2, device_id=1)
            anemometer.wind.gust_m_s = 2.0
            gusty = await client.read_holding_registers(0, count=2, device_id=10)
            true = anemometer.true_wind()
        finally:
            client.close()
    assert calm.registers == [62, 0]  # 6.2 m/s; 359.97 deg reads 0.0, never 360.0
    assert windy.registers == [184, 450]  # round(183.5)
    assert refused.isError() and refused.exception_code == 2  # read-only device
    assert not neighbour.isError()
    assert abs(gusty.registers[0] / 10 - true.speed_m_s) < 0.3  # gusts move on in between
    assert anemometer.requests_served == 4


# --- command line --------------------------------------------------------------------


async def test_crf_sim_serves_gnss_and_met_and_cleans_up(tmp_path: Path) -> None:
    config = nmea_station(tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "acquisition.cli", "sim", "--config", str(tmp_path / "station.toml"),
        "--no-pace", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    try:
        assert process.stdout is not None
        count = len(config.mfcs) + len(config.gnss) + len(config.met)
        lines = [(await asyncio.wait_for(process.stdout.readline(), 15)).decode().strip()
                 for _ in range(count)]
        heard = await listen_pty(config.gnss["rx"].port or "", lambda listener: listener.fixes)
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    described = {line.split()[0]: line for line in lines}
    assert described["anemo"].startswith("anemo profile=anemometer unit=10 line=bus0")
    assert described["rx"] == (f"rx gnss talker=GN rate=5Hz quality=rtk_fixed "
                               f"at={config.gnss['rx'].port}")
    assert described["rx_tcp"].endswith(f"at={config.gnss['rx_tcp'].endpoint}")
    assert described["ws"] == f"ws met protocol=nmea rate=1Hz at={config.met['ws'].port}"
    assert heard.fixes
    for port in (config.gnss["rx"].port, config.met["ws"].port, config.lines["bus0"].port):
        assert not linked(port)

