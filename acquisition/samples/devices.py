"""Builds the Modbus drivers a station config describes: lines, MFCs, sensors (anemometers,
gas analyzers), valves."""

from __future__ import annotations

from dataclasses import dataclass

from acquisition.config.station import StationConfig, modbus_sensors
from drivers.mfc import MfcDriver, ModbusDevice
from drivers.modbus_line import ModbusLine
from drivers.valve import ShutoffValve


@dataclass
class StationDevices:
    lines: dict[str, ModbusLine]
    mfcs: dict[str, MfcDriver]
    sensors: dict[str, ModbusDevice]  # Modbus met sensors (anemometers), gas analyzers
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
        name: ModbusDevice(name, lines[sensor.line], sensor.unit_id, sensor.resolved_profile)
        for _, name, sensor in modbus_sensors(config)
    }
    valves = {name: ShutoffValve(name, lines[valve.line], valve.unit_id, valve.coil)
              for name, valve in config.valves.items()}
    return StationDevices(lines, mfcs, sensors, valves)
