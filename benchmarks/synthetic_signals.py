"""The samples of a synthetic test day, one time slice at a time, as the recorder writes
them: every channel a driver emits per poll or sentence, with its unit and its own stamp.

MFCs are polled at the station's `sample_rate_hz`, each profile block its own transaction
(and stamp); a fault makes the block's samples valueless with the driver's quality and
message. The analyzer stamps its lines itself at 10 Hz; GNSS sends GGA and RMC at 5 Hz,
ZDA, GST and GSA at 1 Hz; the weather station MWV and MDA at 1 Hz. Values are plausible,
not physical: the flows follow `Day.flow`, the methane analyzer sees the releases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from synthetic_day import NS, P1_ANTENNA, Day, Fault

from acquisition.config.station import StationConfig
from acquisition.geodesy import offset_to_degrees
from drivers.profile import Block, load_profile
from drivers.sample import Quality

ANALYZER = "ch4_east"
ANALYZER_HZ = 10
GNSS = "rx_p1"
GNSS_HZ = 5
MET = "ws1"
MET_HZ = 1
DAY_S = 86_400.0


def _diurnal(t_ns: np.ndarray, mean: float, swing: float, start_ns: int) -> np.ndarray:
    """A daily cycle peaking mid-afternoon of a day starting at midnight."""
    hours = (t_ns - start_ns) / NS / 3600
    return mean + swing * np.sin(2 * math.pi * (hours - 9) / 24)


@dataclass
class Batch:
    """One slice's samples: each channel added as arrays, then all of them in time order.
    `problem` indexes `problems` ((quality, detail) of a sample without a value), -1: ok."""

    channel_ids: dict[tuple[str, str, str], int]
    problems: list[tuple[str, str]] = field(default_factory=list)
    _parts: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]] = field(default_factory=list)

    def add(self, device: str, channel: str, unit: str, t_ns: np.ndarray, values: np.ndarray,
            problem: np.ndarray | None = None) -> None:
        key = (device, channel, unit)
        channel_id = self.channel_ids.setdefault(key, len(self.channel_ids) + 1)
        if problem is None:
            problem = np.full(t_ns.shape, -1)
        self._parts.append((t_ns, channel_id, np.where(problem < 0, values, np.nan), problem))

    def problem_id(self, quality: str, detail: str) -> int:
        if (quality, detail) not in self.problems:
            self.problems.append((quality, detail))
        return self.problems.index((quality, detail))

    def good_values(self, key: tuple[str, str, str], a_ns: int, b_ns: int) -> list[float]:
        """The values of one channel stamped in [a, b), good ones only, in time order."""
        channel_id = self.channel_ids[key]
        return [value for t_ns, channel, values, problem in self._parts if channel == channel_id
                for value in values[(t_ns >= a_ns) & (t_ns < b_ns) & (problem < 0)].tolist()]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """t_ns, channel id, value (NaN without one), problem: sorted by time."""
        if not self._parts:
            empty = np.zeros(0, np.int64)
            return empty, empty, np.zeros(0), empty
        t_ns = np.concatenate([t for t, *_ in self._parts])
        channel = np.concatenate([np.full(t.shape, c) for t, c, *_ in self._parts])
        value = np.concatenate([v for *_, v, _ in self._parts])
        problem = np.concatenate([p for *_, p in self._parts])
        order = np.argsort(t_ns, kind="stable")
        return t_ns[order], channel[order], value[order], problem[order]

    def __len__(self) -> int:
        return sum(len(t) for t, *_ in self._parts)


@dataclass(frozen=True)
class Fixes:
    """The GGA fixes of a slice: what the release-point survey is fed."""

    t_ns: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    alt: np.ndarray
    sats: np.ndarray
    hdop: np.ndarray


def fault_detail(config: StationConfig, fault: Fault, block: Block) -> str:
    """The driver's message for a poll of `block` that failed as `fault` says."""
    mfc = config.mfcs[fault.device]
    line = config.lines[mfc.line]
    what = f"read {block.count} {block.function} registers at {block.start}"
    why = ("connection lost" if fault.quality is Quality.DISCONNECTED
           else f"no valid reply within {line.timeout_s} s ({line.retries + 1} tries)")
    return f"line '{mfc.line}' unit {mfc.unit_id}: {what}: {why}"


def _ticks(start_ns: int, hz: float, a_ns: int, b_ns: int) -> np.ndarray:
    """The times start + k / hz within [a, b)."""
    period = NS / hz
    first = math.ceil((a_ns - start_ns) / period)
    last = math.ceil((b_ns - start_ns) / period)
    return start_ns + (np.arange(first, last) * period).astype(np.int64)


class DaySignals:
    """Generates the day's samples slice by slice; keeps what runs on across slices (the
    MFC totalizers) and the channel ids, in the order the recorder first saw them."""

    def __init__(self, day: Day, seed: int) -> None:
        self.day = day
        self.rng = np.random.default_rng([seed, 1])
        self.channel_ids: dict[tuple[str, str, str], int] = {}
        self.totalizers = dict.fromkeys(day.config.mfcs, 0.0)
        self._deg_per_m = offset_to_degrees(P1_ANTENNA[0], 1.0, 1.0)
        self.profiles = {name: load_profile(mfc.profile) for name, mfc in day.config.mfcs.items()}

    def slice(self, a_ns: int, b_ns: int) -> tuple[Batch, Fixes]:
        """The samples of every poll and sentence due in [a, b) (each stamped a few ms
        later, on arrival), and the GNSS fixes among them."""
        batch = Batch(self.channel_ids)
        for number, mfc in enumerate(self.day.config.mfcs):
            self._mfc(batch, mfc, number, a_ns, b_ns)
        self._analyzer(batch, a_ns, b_ns)
        fixes = self.gnss(batch, a_ns, b_ns)
        self._met(batch, a_ns, b_ns)
        return batch, fixes

    def _noise(self, sigma: float, shape: tuple[int, ...]) -> np.ndarray:
        return self.rng.normal(0.0, sigma, shape)

    def _mfc(self, batch: Batch, name: str, number: int, a_ns: int, b_ns: int) -> None:
        config = self.day.config
        mfc = config.mfcs[name]
        profile = self.profiles[name]
        polls = _ticks(self.day.start_ns, config.acquisition.sample_rate_hz, a_ns, b_ns)
        polls = polls + number * 6_000_000  # the pollers take turns on the line
        for block_number, block in enumerate(profile.poll_blocks()):
            t_ns = polls + block_number * 2_500_000 + self.rng.integers(0, 2_000_000, len(polls))
            failed = np.full(len(polls), -1)
            for fault in self.day.faults:
                if fault.device == name:
                    failing = (t_ns >= fault.start_ns) & (t_ns < fault.end_ns)
                    failed[failing] = batch.problem_id(fault.quality.value,
                                                       fault_detail(config, fault, block))
            flow = self.day.flow(name, t_ns) + self._noise(0.0005 * mfc.full_scale, t_ns.shape)
            temperature = (_diurnal(t_ns, 21.0, 5.0, self.day.start_ns)
                           + self._noise(0.03, t_ns.shape))
            pressure = 29.5 + self._noise(0.02, t_ns.shape)
            starved = self.day.steps[self.day.starved_step]
            dropping = (t_ns >= starved.settle_ns) & (t_ns < starved.end_ns)
            pressure[dropping] -= 9 * (t_ns[dropping] - starved.settle_ns) / (
                starved.end_ns - starved.settle_ns)
            period_min = 1 / config.acquisition.sample_rate_hz / 60
            totalizer = self.totalizers[name] + np.cumsum(np.clip(flow, 0, None)) * period_min
            if len(totalizer):
                self.totalizers[name] = float(totalizer[-1])
            values = {"flow": flow, "temperature": temperature, "pressure": pressure,
                      "status": np.zeros(t_ns.shape), "totalizer": totalizer,
                      "volumetric_flow": flow * (temperature + 273.15) / 298.15 * 14.696
                      / pressure}
            for member in block.members:
                batch.add(name, member, profile.unit_of(member), t_ns, values[member], failed)

    def _analyzer(self, batch: Batch, a_ns: int, b_ns: int) -> None:
        t_ns = _ticks(self.day.start_ns, ANALYZER_HZ, a_ns, b_ns)
        plume = (0.9 * self.day.release_kg_h("P1", t_ns - 8 * NS)
                 + 0.15 * self.day.release_kg_h("P2", t_ns - 15 * NS))
        ch4 = (1.95 + plume * self.rng.lognormal(0.0, 0.4, t_ns.shape)
               + self._noise(0.003, t_ns.shape))
        start = self.day.start_ns
        batch.add(ANALYZER, "ch4", "ppm", t_ns, ch4)
        batch.add(ANALYZER, "co2", "ppm",
                  t_ns, _diurnal(t_ns, 418.0, -4.0, start) + self._noise(0.3, t_ns.shape))
        batch.add(ANALYZER, "h2o", "%",
                  t_ns, _diurnal(t_ns, 1.2, 0.2, start) + self._noise(0.005, t_ns.shape))

    def gnss(self, batch: Batch, a_ns: int, b_ns: int) -> Fixes:
        """The receiver's sentences in [a, b) into `batch`; its fixes."""
        epochs = _ticks(self.day.start_ns, GNSS_HZ, a_ns, b_ns)
        n = epochs.shape
        gga = epochs + 45_000_000 + self.rng.integers(0, 3_000_000, n)
        dlat, dlon = self._deg_per_m
        lat0, lon0, alt0 = P1_ANTENNA
        fixes = Fixes(gga, lat0 + dlat * self._noise(0.008, n), lon0 + dlon * self._noise(0.008, n),
                      alt0 + self._noise(0.015, n),
                      (18 + 3 * np.sin(epochs / NS / 1700)).round(), 0.7 + self._noise(0.03, n))
        for channel, unit, values in (("fix_quality", "", np.full(n, 4.0)),
                                      ("sats", "", fixes.sats), ("hdop", "", fixes.hdop),
                                      ("lat", "deg", fixes.lat), ("lon", "deg", fixes.lon),
                                      ("alt", "m", fixes.alt)):
            batch.add(GNSS, channel, unit, gga, values)
        rmc = gga + 8_000_000
        utc_s = epochs / NS
        batch.add(GNSS, "rmc_valid", "", rmc, np.ones(n))
        self._clock(batch, rmc, utc_s)
        whole = (epochs - self.day.start_ns) % NS == 0
        second = gga[whole]
        self._clock(batch, second + 16_000_000, utc_s[whole])
        for number, (channel, unit, mean) in enumerate((
                ("sigma_lat", "m", 0.008), ("sigma_lon", "m", 0.007), ("sigma_alt", "m", 0.015),
                ("gsa_pdop", "", 1.3), ("gsa_hdop", "", 0.7), ("gsa_vdop", "", 1.1))):
            t_ns = second + (24_000_000 if number < 3 else 32_000_000)
            batch.add(GNSS, channel, unit, t_ns, mean * (1 + self._noise(0.05, t_ns.shape)))
        return fixes

    def _clock(self, batch: Batch, t_ns: np.ndarray, utc_s: np.ndarray) -> None:
        """RMC or ZDA: the receiver's UTC and its offset from the host clock at arrival."""
        batch.add(GNSS, "receiver_utc", "s", t_ns, utc_s)
        batch.add(GNSS, "clock_offset", "s", t_ns, utc_s - t_ns / NS)

    def _met(self, batch: Batch, a_ns: int, b_ns: int) -> None:
        seconds = _ticks(self.day.start_ns, MET_HZ, a_ns, b_ns)
        n = seconds.shape
        phase = (seconds - self.day.start_ns) / NS
        speed = np.clip(3.0 + 1.2 * np.sin(phase / 3440) + 0.6 * np.sin(phase / 160)
                        + self._noise(0.4, n), 0.1, None)
        direction = (270 + 30 * np.sin(phase / 5160) + self._noise(8.0, n)) % 360
        mwv = seconds + 210_000_000
        batch.add(MET, "wind_direction", "deg", mwv, direction)
        batch.add(MET, "wind_speed", "m/s", mwv, speed)
        mda = seconds + 260_000_000
        batch.add(MET, "air_pressure", "hPa",
                  mda, _diurnal(seconds, 1008.0, -2.0, self.day.start_ns) + self._noise(0.05, n))
        batch.add(MET, "air_temperature", "degC",
                  mda, _diurnal(seconds, 20.0, 6.0, self.day.start_ns) + self._noise(0.05, n))
        batch.add(MET, "wind_direction", "deg", mda, (direction + self._noise(2.0, n)) % 360)
        batch.add(MET, "wind_speed", "m/s", mda, np.clip(speed + self._noise(0.1, n), 0, None))
