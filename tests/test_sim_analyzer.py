"""The simulated gas analyzers on real ptys: their lines rise when the simulated MFC
releases and the inlet is downwind, stay at background upwind, and read with the
station's own analyzer parser in every format."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
import serial

from acquisition.config.station import StationConfig
from acquisition.geodesy import offset_to_degrees
from drivers.analyzer import LineFormat, LineParser
from simulators.analyzer import analyzer_line
from simulators.plume import Source, excess_ppm
from simulators.settings import AnalyzerFormat, SimConfigError
from simulators.station import SimStation

LAT0, LON0 = 34.75, 113.63  # release point P1
BACKGROUND, NOISE = 2.0, 0.001  # ppm
WAIT_S = 10.0
# [analyzers.<name>] tables that read each of the simulator's line formats.
FORMATS: dict[str, str] = {
    "delimited": 'format = "delimited"\ndelimiter = ","\ncolumns = ["t", "ch4", "temp"]\n',
    "keyvalue": 'format = "keyvalue"\npair_separator = "whitespace"\n',
    "regex": ('format = "regex"\npattern = "(?P<t>\\\\S+ \\\\S+) CH4 (?P<ch4>\\\\S+) ppm '
              'T (?P<temp>\\\\S+) C"\n'),
}
TIMESTAMP = {"delimited": '{ field = "t" }', "keyvalue": '{ field = "t" }',
             "regex": '{ field = "t", timezone = "UTC" }'}


def north_of_p1(metres: float) -> float:
    """The latitude `metres` north of P1."""
    return LAT0 + offset_to_degrees(LAT0, metres, 0.0)[0]


def analyzer_tables(tmp_path: Path, name: str, fmt: str, north_m: float) -> str:
    return f"""
[analyzers.{name}]
port = "{tmp_path / 'dev' / name}"
{FORMATS[fmt]}channels = {{ ch4 = "ppm", temp = "degC" }}
timestamp = {TIMESTAMP[fmt]}
[sim.analyzers.{name}]
latitude = {north_of_p1(north_m)}
longitude = {LON0}
height_m = 1.0
rate_hz = 10
background_ppm = {BACKGROUND}
noise_ppm = {NOISE}
"""


@pytest.fixture
def config(make_config: Callable[..., StationConfig], tmp_path: Path) -> StationConfig:
    """P1 fed by the Alicat, a steady 3 m/s wind from the south, an analyzer 50 m north
    of P1 (downwind) and one 50 m south (upwind)."""
    return make_config(extra=f"""
[release_points.P1]
mfcs = ["alicat"]
latitude = {LAT0}
longitude = {LON0}
[met.ws]
protocol = "nmea"
port = "{tmp_path / 'dev' / 'ws'}"
[sim.mfcs.alicat]
time_constant_s = 0.01
[sim.met.ws]
wind_speed_m_s = 3.0
gust_m_s = 0.0
direction_deg = 180.0
direction_drift_deg_per_min = 0.0
""" + analyzer_tables(tmp_path, "north", "delimited", 50.0)
        + analyzer_tables(tmp_path, "south", "keyvalue", -50.0))


class Lines:
    """What a client reading one analyzer's pty has heard: the ppm of every line."""

    def __init__(self) -> None:
        self.ppm: list[float] = []
        self.raw = bytearray()
        self._news = asyncio.Event()

    def feed(self, data: bytes) -> None:
        self.raw += data
        *lines, rest = self.raw.split(b"\r\n")
        self.raw = bytearray(rest)
        for line in lines:
            fields = line.decode("ascii").replace("=", " ").replace(",", " ").split()
            self.ppm.append(float(fields[fields.index("ch4") + 1] if "ch4" in fields
                                  else fields[1]))
        self._news.set()

    async def until(self, condition: Callable[[list[float]], bool]) -> None:
        """Return once `condition(ppm)` holds: checked now and after every chunk heard."""
        try:
            async with asyncio.timeout(WAIT_S):
                while not condition(self.ppm):
                    self._news.clear()
                    await self._news.wait()
        except TimeoutError:
            raise AssertionError(f"not heard within {WAIT_S} s: {self.ppm[-10:]}") from None


@asynccontextmanager
async def reading(path: str) -> AsyncIterator[Lines]:
    """The analyzer's port opened with pyserial, as a logger would, fed to a Lines."""
    lines = Lines()
    port = serial.Serial(path, timeout=0)
    loop = asyncio.get_running_loop()
    loop.add_reader(port.fileno(), lambda: lines.feed(port.read(4096)))
    try:
        yield lines
    finally:
        loop.remove_reader(port.fileno())
        port.close()


def at_background(values: list[float]) -> bool:
    return all(abs(value - BACKGROUND) < 6 * NOISE for value in values)


async def test_lines_rise_downwind_of_a_release_and_stay_at_background_upwind(
    config: StationConfig, sim: SimStation
) -> None:
    async with reading(sim.analyzer("north").endpoint) as north, \
            reading(sim.analyzer("south").endpoint) as south:
        await north.until(lambda ppm: len(ppm) >= 5)
        await south.until(lambda ppm: len(ppm) >= 5)
        assert at_background(north.ppm) and at_background(south.ppm)

        sim.device("alicat").setpoint = 5.0  # SLPM
        heard_south = len(south.ppm)
        plume = BACKGROUND + 0.1
        await north.until(lambda ppm: sum(value > plume for value in ppm) >= 8)
        await south.until(lambda ppm: len(ppm) >= heard_south + 8)
        assert at_background(south.ppm)

        kg_h = config.conversion("alicat").mass_rate(5.0)
        assert sum(s.rate_kg_h for s in sim.sources()) == pytest.approx(kg_h, rel=1e-9)
        expected = BACKGROUND + float(excess_ppm(
            [Source("P1", LAT0, LON0, kg_h)], np.array(north_of_p1(50.0)), np.array(LON0),
            np.array(1.0), wind_m_s=3.0, wind_from_deg=180.0, stability="D", gas="CH4",
            temperature_c=20.0, pressure_hpa=1013.25))
        assert expected > BACKGROUND + 0.5  # about 0.7 ppm over background, 50 m downwind
        assert north.ppm[-5:] == pytest.approx([expected] * 5, abs=6 * NOISE)

        sim.met("ws").wind.direction_deg = 0.0  # the wind turns: north is now upwind
        heard_north = len(north.ppm)
        await north.until(lambda ppm: len(ppm) >= heard_north + 5)
        assert at_background(north.ppm[heard_north + 1:])


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_line_format_reads_with_the_station_parser(fmt: AnalyzerFormat) -> None:
    table = {"format": fmt, "channels": {"ch4": "ppm", "temp": "degC"},
             "timestamp": {"field": "t", "timezone": "UTC"} if fmt == "regex"
             else {"field": "t"}}
    table |= {"delimited": {"delimiter": ",", "columns": ["t", "ch4", "temp"]},
              "keyvalue": {"pair_separator": "whitespace"},
              "regex": {"pattern": r"(?P<t>\S+ \S+) CH4 (?P<ch4>\S+) ppm T (?P<temp>\S+) C"}
              }[fmt]
    epoch = 1_795_508_099.9996  # 2026-11-24T08:14:59.9996Z: rounds up to 08:15:00.000
    line = analyzer_line(fmt, epoch, "CH4", 2.71828, -3.04)
    assert line.endswith(b"\r\n") and line.count(b"\n") == 1
    reading = LineParser(LineFormat.model_validate(table)).parse(line[:-2])
    assert reading.values == {"ch4": 2.7183, "temp": -3.0}
    assert reading.t_ns == 1_795_508_100_000_000_000


def test_an_analyzer_the_station_cannot_read_is_refused(
    make_config: Callable[..., StationConfig], tmp_path: Path
) -> None:
    extra = (analyzer_tables(tmp_path, "north", "delimited", 50.0)
             .replace('delimiter = ","', 'delimiter = ";"')
             + '[met.ws]\nprotocol = "nmea"\nport = "/tmp/ws"\n')
    with pytest.raises(SimConfigError) as error:
        SimStation(make_config(extra=extra))
    assert error.value.problems[0][0] == "sim.analyzers.north.format"
    assert "columns" in error.value.problems[0][1]


def test_an_analyzer_needs_its_table_and_a_wind(
    make_config: Callable[..., StationConfig], tmp_path: Path
) -> None:
    extra = (analyzer_tables(tmp_path, "north", "delimited", 50.0)
             + "[sim.analyzers.nowhere]\nlatitude = 1.0\nlongitude = 2.0\n"
             + '[analyzers.polled]\nprotocol = "modbus"\nline = "bus0"\nunit_id = 30\n'
             + "[sim.analyzers.polled]\nlatitude = 1.0\nlongitude = 2.0\n"
             + "wind_speed_m_s = 2.0\nwind_direction_deg = 90.0\n")
    with pytest.raises(SimConfigError) as error:
        SimStation(make_config(extra=extra))
    assert error.value.problems == [
        ("sim.analyzers.nowhere", "no analyzer named 'nowhere' (defined: north, polled)"),
        ("sim.analyzers.north", "no wind to carry the plume: give `wind_speed_m_s` and "
                                "`wind_direction_deg`, or simulate a [met.*]"),
        ("sim.analyzers.nowhere", "no wind to carry the plume: give `wind_speed_m_s` and "
                                  "`wind_direction_deg`, or simulate a [met.*]"),
        ("sim.analyzers.polled", "only a text analyzer on a port (transport 'serial' or "
                                 "'tcp') is simulated")]
