"""Simulated weather devices: an NMEA station (MWV + MDA) or a Modbus anemometer.

Both measure a WindModel, so a test drives the wind the same way whichever protocol
the station config names; the anemometer sits on a Modbus line with the MFCs.
"""

from __future__ import annotations

import math

import numpy as np

from acquisition.config.station import ModbusMetConfig
from simulators.modbus_device import ModbusDevice
from simulators.nmea_out import mda, mwv
from simulators.settings import MetSim
from simulators.stream_device import StreamDevice
from simulators.stream_port import StreamPort
from simulators.wind import Wind, WindModel


class NmeaMet(StreamDevice):
    """A weather station that sends $WIMWV (true wind, m/s) and $WIMDA at `rate_hz`."""

    def __init__(self, name: str, port: StreamPort, settings: MetSim,
                 rng: np.random.Generator) -> None:
        super().__init__(name, port, rng)
        self.wind = WindModel(settings, rng)
        self.rate_hz = settings.rate_hz

    def true_wind(self) -> Wind:
        return self.wind.true_wind()

    def describe(self) -> str:
        return f"met protocol=nmea rate={self.rate_hz:g}Hz at={self.endpoint}"

    def next_epoch(self, now: float) -> float:
        return (math.floor(now * self.rate_hz + 1e-6) + 1) / self.rate_hz

    def burst(self, epoch: float) -> list[bytes]:
        wind = self.wind.true_wind()
        return [mwv(wind.direction_deg, wind.speed_m_s),
                mda(self.wind.pressure_hpa, self.wind.temperature_c, wind.direction_deg,
                    wind.speed_m_s)]


class SimulatedAnemometer(ModbusDevice):
    """A read-only Modbus anemometer: its profile's wind registers, read at request time."""

    def __init__(self, name: str, config: ModbusMetConfig, settings: MetSim,
                 rng: np.random.Generator) -> None:
        super().__init__(name, config.unit_id, config.resolved_profile)
        self.wind = WindModel(settings, rng)

    def true_wind(self) -> Wind:
        return self.wind.true_wind()

    def values(self) -> dict[str, float]:
        wind = self.wind.true_wind()
        # The sensor shows 0.0-359.9 degrees: 359.96 is read as 0.0, not 360.0.
        computed = {"wind_speed": wind.speed_m_s,
                    "wind_direction": round(wind.direction_deg, 1) % 360}
        return {name: computed.get(name, 0.0) for name in self.profile.registers}
