"""The wind a simulated weather device measures: a drifting mean plus correlated gusts.

Gusts are a random vector along and across the mean wind that relaxes over
GUST_TIME_S (an Ornstein-Uhlenbeck process, updated exactly for any time step), so
readings a second apart are correlated as real ones are, and the direction swings
more in light wind than in strong wind.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simulators.settings import MetSim

GUST_TIME_S = 4.0


@dataclass(frozen=True)
class Wind:
    speed_m_s: float
    direction_deg: float  # where it blows from, degrees true, [0, 360)


class WindModel:
    """Mean speed and direction (settable at run time), gusts, air temperature and pressure."""

    def __init__(self, settings: MetSim, rng: np.random.Generator,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.speed_m_s = settings.wind_speed_m_s  # mean
        self.gust_m_s = settings.gust_m_s  # 1-sigma of each gust component
        self.drift_deg_per_min = settings.direction_drift_deg_per_min
        self.temperature_c = settings.temperature_c
        self.pressure_hpa = settings.pressure_hpa
        self._rng = rng
        self._clock = clock
        self._direction = settings.direction_deg
        self._direction_at = self._gust_at = clock()
        self._gust = rng.normal(0.0, self.gust_m_s, 2)  # along, across the mean wind

    @property
    def direction_deg(self) -> float:
        """The mean direction now; it drifts from the last value set."""
        minutes = (self._clock() - self._direction_at) / 60
        return (self._direction + self.drift_deg_per_min * minutes) % 360

    @direction_deg.setter
    def direction_deg(self, value: float) -> None:
        self._direction = value % 360
        self._direction_at = self._clock()

    def true_wind(self) -> Wind:
        """The wind at this instant (what a perfect sensor reads now)."""
        now = self._clock()
        keep = math.exp(-(now - self._gust_at) / GUST_TIME_S)
        self._gust_at = now
        self._gust = (self._gust * keep
                      + self.gust_m_s * math.sqrt(1 - keep**2) * self._rng.normal(size=2))
        along, across = self.speed_m_s + self._gust[0], self._gust[1]
        swing = math.degrees(math.atan2(across, along))
        return Wind(math.hypot(along, across), (self.direction_deg + swing) % 360)
