"""Builds the drivers a station config describes: one ModbusLine per line, one driver per MFC."""

from __future__ import annotations

from dataclasses import dataclass

from acquisition.config import StationConfig
from drivers.mfc import MfcDriver
from drivers.modbus_line import ModbusLine


@dataclass
class StationDevices:
    lines: dict[str, ModbusLine]
    mfcs: dict[str, MfcDriver]

    def close(self) -> None:
        for line in self.lines.values():
            line.close()


def build_devices(config: StationConfig) -> StationDevices:
    lines = {name: ModbusLine(name, settings) for name, settings in config.lines.items()}
    mfcs = {
        name: MfcDriver(
            name, lines[mfc.line], mfc.unit_id, mfc.resolved_profile(), mfc.full_scale
        )
        for name, mfc in config.mfcs.items()
    }
    return StationDevices(lines, mfcs)
