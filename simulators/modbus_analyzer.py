"""A simulated Modbus gas analyzer: fixed concentrations served through its profile.

It reads clean ambient air (BACKGROUND) until a test sets `readings`; what the release
adds at an inlet is the streaming analyzer's business (simulators/analyzer.py).
"""

from __future__ import annotations

from acquisition.config.tables import ModbusAnalyzerConfig
from simulators.modbus_device import ModbusDevice

BACKGROUND = {"ch4": 2.0, "co2": 420.0, "h2o": 1.0}  # ppm, ppm, %: the shipped profile's units


class SimulatedGasAnalyzer(ModbusDevice):
    """A read-only Modbus analyzer on `line`; registers it has no reading for read 0."""

    def __init__(self, name: str, config: ModbusAnalyzerConfig) -> None:
        super().__init__(name, config.unit_id, config.resolved_profile)
        self.line = config.line
        self.readings = dict(BACKGROUND)

    def values(self) -> dict[str, float]:
        return {name: self.readings.get(name, 0.0) for name in self.profile.registers}
