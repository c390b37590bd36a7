"""A GNSS receiver on a fixed antenna: noisy fixes around a true position, at its own rate.

The noise is white and Gaussian per axis with the 1-sigma of the fix quality, and
GST reports exactly that sigma, so a consumer's spread and the receiver's own error
estimate agree, as they should for a healthy receiver. Fix-loss episodes, a clock
offset, corrupted checksums and binary junk can be switched on from the config or
at run time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from acquisition.geodesy import offset_to_degrees
from simulators.nmea_out import GNSS_SENTENCES, NO_DOP, Epoch
from simulators.settings import FixQuality, GnssSim
from simulators.stream_device import StreamDevice
from simulators.stream_port import StreamPort

VERTICAL_FACTOR = 1.5  # vertical sigma / horizontal sigma
VDOP_FACTOR = 1.5
SATS_WANDER = 2  # satellites in use drift this far from the quality's typical count
SATS_CHANGE_CHANCE = 0.05  # per epoch


@dataclass(frozen=True)
class Position:
    latitude: float
    longitude: float
    altitude_m: float


@dataclass(frozen=True)
class Quality:
    """How a fix of one quality looks: GGA code, mode character, noise, constellation."""

    code: int
    mode: str
    sigma_h_m: float | None
    sats: int
    hdop: float


QUALITIES: dict[str, Quality] = {
    "none": Quality(0, "N", None, 0, NO_DOP),
    "autonomous": Quality(1, "A", 2.5, 9, 1.2),
    "dgnss": Quality(2, "D", 0.7, 12, 0.9),
    "rtk_float": Quality(5, "F", 0.3, 18, 0.7),
    "rtk_fixed": Quality(4, "R", 0.015, 22, 0.6),
}


class SimulatedGnss(StreamDevice):
    """A receiver whose true position, quality and faults tests may change at any time."""

    def __init__(self, name: str, port: StreamPort, settings: GnssSim, position: Position,
                 rng: np.random.Generator) -> None:
        super().__init__(name, port, rng)
        self.true_position = position
        self.rate_hz = settings.rate_hz
        self.talker = settings.talker
        self.sentences = list(settings.sentences)
        self.clock_offset_s = settings.clock_offset_s  # receiver UTC minus host clock
        self.fix_loss_every_s = settings.fix_loss_every_s
        self.fix_loss_duration_s = settings.fix_loss_duration_s
        self.faults.corrupt_fraction = settings.corrupt_fraction
        self.faults.junk = settings.junk
        self.quality: FixQuality = settings.fix_quality
        self._sats = QUALITIES[self.quality].sats
        self._prns = tuple(int(p) for p in rng.permutation(np.arange(1, 33)))

    def set_quality(self, quality: str) -> None:
        """Switch fix quality now: none, autonomous, dgnss, rtk_float or rtk_fixed."""
        if quality not in QUALITIES:
            raise ValueError(f"unknown fix quality '{quality}'; qualities: {', '.join(QUALITIES)}")
        self.quality = quality  # type: ignore[assignment]  # checked just above

    def quality_at(self, epoch: float) -> str:
        """The quality reported at host time `epoch`: "none" during a fix-loss episode,
        the last `fix_loss_duration_s` of every `fix_loss_every_s` (counted from 1970)."""
        if self.fix_loss_every_s and self.fix_loss_duration_s:
            # In whole microseconds: x.6 % 1.0 is 0.5999999 in floating point.
            into_us = round(epoch * 1e6) % round(self.fix_loss_every_s * 1e6)
            if into_us >= round((self.fix_loss_every_s - self.fix_loss_duration_s) * 1e6):
                return "none"
        return self.quality

    def describe(self) -> str:
        return (f"gnss talker={self.talker} rate={self.rate_hz:g}Hz quality={self.quality} "
                f"at={self.endpoint}")

    def next_epoch(self, now: float) -> float:
        """Epochs fall on whole multiples of the period in receiver UTC."""
        receiver = now + self.clock_offset_s
        next_receiver = (math.floor(receiver * self.rate_hz + 1e-6) + 1) / self.rate_hz
        return next_receiver - self.clock_offset_s

    def burst(self, epoch: float) -> list[bytes]:
        report = self.epoch(epoch)
        return [GNSS_SENTENCES[kind](self.talker, report) for kind in self.sentences]

    def epoch(self, epoch: float) -> Epoch:
        """What the receiver reports for host time `epoch`, with fresh noise."""
        utc = epoch + self.clock_offset_s
        quality = QUALITIES[self.quality_at(epoch)]
        if quality.sigma_h_m is None:
            return Epoch(utc, 0, quality.mode, None, None, None, int(self.rng.integers(0, 4)),
                         NO_DOP, NO_DOP, NO_DOP, None, None, (), False)
        if self.rng.random() < SATS_CHANGE_CHANCE:
            self._sats += int(self.rng.choice((-1, 1)))
        sats = self._sats = int(np.clip(self._sats, quality.sats - SATS_WANDER,
                                        quality.sats + SATS_WANDER))
        hdop = quality.hdop * math.sqrt(quality.sats / sats)
        vdop = VDOP_FACTOR * hdop
        sigma_h, sigma_v = quality.sigma_h_m, VERTICAL_FACTOR * quality.sigma_h_m
        north, east = self.rng.normal(0.0, sigma_h, 2)
        up = self.rng.normal(0.0, sigma_v)
        true = self.true_position
        d_lat, d_lon = offset_to_degrees(true.latitude, north, east)
        longitude = (true.longitude + d_lon + 180) % 360 - 180  # across the antimeridian
        return Epoch(utc, quality.code, quality.mode, true.latitude + d_lat,
                     longitude, true.altitude_m + up, sats, hdop, vdop,
                     math.hypot(hdop, vdop), sigma_h, sigma_v, tuple(sorted(self._prns[:sats])),
                     quality.code != 1)
