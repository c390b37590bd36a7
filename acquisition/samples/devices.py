"""Builds the Modbus drivers a station config describes: lines, MFCs, sensors, valves."""

from __future__ import annotations

from dataclasses import dataclass

from acquisition.config.station import StationConfig
from acquisition.config.tables import ModbusMetConfig
from drivers.mfc import MfcDriver, ModbusDevice
from drivers.modbus_line import ModbusLine
from drivers.valve import ShutoffValve


@dataclass
class StationDevices:
    lines: dict[str, ModbusLine]
    mfcs: dict[str, MfcDriver]
    sensors: dict[str, ModbusDevice]  # Modbus met sensors (anemometers)
    valves: dict[str, ShutoffValve]

    def close(self) -> None:
        for line in self.lines.values():
            line.close()


def build_devices(config: StationConfig) -> StationDevices:
    lines = {name: ModbusLine(name, settings) for name, settings in config.lines.items()}
    mfcs = {
        name: MfcDriver(
            name, lines[mfc.line], mfc.unit_id, mfc.resolved_profile, mfc.full_scale
        )
        for name, mfc in config.mfcs.items()
    }
    sensors = {
        name: ModbusDevice(name, lines[met.line], met.unit_id, met.resolved_profile)
        for name, met in config.met.items()
        if isinstance(met, ModbusMetConfig)
    }
    valves = {name: ShutoffValve(name, lines[valve.line], valve.unit_id, valve.coil)
              for name, valve in config.valves.items()}
    return StationDevices(lines, mfcs, sensors, valves)
