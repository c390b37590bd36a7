"""Flow physics of one simulated MFC: what its sensors would read at a given moment.

The model is advanced lazily to the current time whenever it is read or its setpoint
changes, so a simulator needs no background ticking and answers are exact whatever the
polling rate: the first-order response and the totalizer integral are solved in closed form.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DEFAULT_TIME_CONSTANT_S = 0.3
DEFAULT_NOISE = 0.001  # 1 sigma, as a fraction of full scale
LINE_PRESSURE_KPA = 101.4  # a release line vented to ambient, a little above 1 atm
LINE_TEMPERATURE_C = 20.0
PRESSURE_NOISE_KPA = 0.01
TEMPERATURE_NOISE_C = 0.01


@dataclass(frozen=True)
class Reading:
    """What the device's sensors show at one instant (flow in the device's flow unit)."""

    flow: float
    true_flow: float
    pressure_kpa: float
    temperature_c: float
    totalizer: float  # standard volume: flow unit x minutes (SLPM -> SL)


class MfcPhysics:
    """First-order flow response to the setpoint, with sensor noise and a totalizer."""

    def __init__(
        self,
        full_scale: float,
        rng: np.random.Generator,
        *,
        time_constant_s: float = DEFAULT_TIME_CONSTANT_S,
        noise: float = DEFAULT_NOISE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.full_scale = full_scale
        self.time_constant_s = time_constant_s
        self.noise_sd = noise * full_scale
        self._rng = rng
        self._clock = clock
        self._t = clock()
        self._setpoint = 0.0
        self._flow = 0.0
        self._totalizer = 0.0
        self._offset = 0.0  # zero error left by a tare done with gas flowing

    def _advance(self) -> None:
        now = self._clock()
        dt = now - self._t
        if dt <= 0:
            return
        decay = math.exp(-dt / self.time_constant_s)
        gap = self._flow - self._setpoint
        # Integral of sp + gap * exp(-t / tau) over [0, dt], per minute of flow.
        volume = self._setpoint * dt + gap * self.time_constant_s * (1.0 - decay)
        self._totalizer += volume / 60.0
        self._flow = self._setpoint + gap * decay
        self._t = now

    @property
    def setpoint(self) -> float:
        return self._setpoint

    @setpoint.setter
    def setpoint(self, value: float) -> None:
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"setpoint must be a finite number >= 0 (got {value})")
        self._advance()
        self._setpoint = float(value)

    def true_flow(self) -> float:
        """The flow actually passing, without sensor noise (never negative)."""
        self._advance()
        return self._flow

    def read(self) -> Reading:
        """Sample every sensor once, noise included."""
        self._advance()
        noise = self._rng.normal(0.0, 1.0, 3)
        return Reading(
            flow=self._flow + self._offset + self.noise_sd * noise[0],
            true_flow=self._flow,
            pressure_kpa=LINE_PRESSURE_KPA + PRESSURE_NOISE_KPA * noise[1],
            temperature_c=LINE_TEMPERATURE_C + TEMPERATURE_NOISE_C * noise[2],
            totalizer=self._totalizer,
        )

    def reset_totalizer(self) -> None:
        self._advance()
        self._totalizer = 0.0

    def tare(self) -> None:
        """Take the present flow as zero, as a real tare does (an error if gas is flowing)."""
        self._offset = -self.true_flow()
