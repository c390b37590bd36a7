"""A simulated gas analyzer: streams the mole fraction of the released gas at its inlet.

What it reads is the Gaussian plume (simulators/plume.py) of the station's release as it
is now (the simulated MFCs' true flow at the release points whose gas can get out),
carried by the wind of a simulated met device or a fixed one, on top of the ambient
background, with sensor noise. So a DUT rehearsal sees concentrations rise when gas
flows and the inlet is downwind, and stay at background when it is upwind.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence

import numpy as np

from drivers.analyzer import LineError, LineFormat, LineParser
from simulators.plume import Source, excess_ppm, observed_ppm
from simulators.settings import AnalyzerFormat, AnalyzerSim
from simulators.stream_device import StreamDevice
from simulators.stream_port import StreamPort
from simulators.wind import WindModel


def utc_stamp(epoch: float) -> str:
    """ISO 8601 UTC to the millisecond with a Z, e.g. 2026-11-26T01:02:03.123Z."""
    whole, ms = divmod(round(epoch * 1000), 1000)
    return dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"


def analyzer_line(fmt: AnalyzerFormat, epoch: float, gas: str, ppm: float,
                  temperature_c: float) -> bytes:
    """One reading as the analyzer writes it, CRLF-terminated:
    delimited  `2026-11-26T01:02:03.123Z,2.0130,21.4` (timestamp, ppm, air temperature);
    keyvalue   `t=2026-11-26T01:02:03.123Z ch4=2.0130 temp=21.4`;
    regex      `2026-11-26 01:02:03.123 CH4 2.0130 ppm T 21.4 C` (for a pattern).
    Their names (`t`, the species in lower case, `temp`) are what [analyzers.<name>] must
    call the columns, keys or groups."""
    stamp = utc_stamp(epoch)
    if fmt == "delimited":
        text = f"{stamp},{ppm:.4f},{temperature_c:.1f}"
    elif fmt == "keyvalue":
        text = f"t={stamp} {gas.lower()}={ppm:.4f} temp={temperature_c:.1f}"
    else:
        text = f"{stamp[:10]} {stamp[11:-1]} {gas} {ppm:.4f} ppm T {temperature_c:.1f} C"
    return text.encode("ascii") + b"\r\n"


def unreadable(fmt: AnalyzerFormat, gas: str, config: LineFormat) -> str | None:
    """Why the station's parser, set up as `config`, cannot read this simulator's lines of
    format `fmt` (None: it can), so that a rehearsal does not fail on a config mismatch."""
    line = analyzer_line(fmt, 1_795_508_100.25, gas, 2.0, 20.0)
    try:
        LineParser(config).parse(line.rstrip(b"\r\n"))
    except LineError as error:
        return (f"the simulator writes {fmt} lines such as {line.decode().strip()!r}, which "
                f"[analyzers] as configured cannot read ({error.kind}: {error})")
    return None


class SimulatedAnalyzer(StreamDevice):
    """One analyzer inlet at a fixed place, writing lines of format `fmt`; `sources` says
    what the station releases now."""

    def __init__(self, name: str, port: StreamPort, settings: AnalyzerSim, fmt: AnalyzerFormat,
                 gas: str, wind: WindModel, sources: Callable[[], Sequence[Source]],
                 rng: np.random.Generator) -> None:
        super().__init__(name, port, rng)
        self.settings = settings
        self.format = fmt
        self.gas = gas
        self.wind = wind
        self.sources = sources

    def describe(self) -> str:
        s = self.settings
        return (f"analyzer format={self.format} rate={s.rate_hz:g}Hz "
                f"inlet={s.latitude:.6f},{s.longitude:.6f},{s.height_m:g}m at={self.endpoint}")

    def next_epoch(self, now: float) -> float:
        rate = self.settings.rate_hz
        return (math.floor(now * rate + 1e-6) + 1) / rate

    def plume_ppm(self) -> float:
        """What the release adds at the inlet now, without background or noise."""
        s, wind = self.settings, self.wind.true_wind()
        return float(excess_ppm(
            self.sources(), np.array(s.latitude), np.array(s.longitude), np.array(s.height_m),
            wind_m_s=wind.speed_m_s, wind_from_deg=wind.direction_deg, stability=s.stability,
            gas=self.gas, temperature_c=self.wind.temperature_c,
            pressure_hpa=self.wind.pressure_hpa, source_height_m=s.release_height_m))

    def burst(self, epoch: float) -> list[bytes]:
        s = self.settings
        ppm = float(observed_ppm(np.array(self.plume_ppm()), s.background_ppm, s.noise_ppm,
                                 self.rng))
        return [analyzer_line(self.format, epoch, self.gas, ppm, self.wind.temperature_c)]
