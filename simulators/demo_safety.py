"""The demo's last word on safety: after the daemon has stopped (it zeroes every MFC and
closes every valve on SIGTERM), read back over Modbus what the simulated devices really
hold, as a technician would check a skid with a Modbus master.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from acquisition.config.station import StationConfig
from acquisition.samples.devices import build_devices
from drivers.modbus_line import ModbusError

READ_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class SafeCheck:
    setpoints: dict[str, float | str]  # MFC -> setpoint read back, or why it could not be
    valves: dict[str, bool | str]  # valve -> open?, or why it could not be read

    @property
    def safe(self) -> bool:
        return (all(value == 0.0 for value in self.setpoints.values())
                and all(value is False for value in self.valves.values()))

    def line(self) -> str:
        """One line that says it: the demo's final line."""
        valves = ", ".join(self.valves)
        if self.safe:
            return (f"MFCs at zero: the simulator holds setpoint 0 on "
                    f"{', '.join(self.setpoints)}" + (f"; valves {valves} closed" if valves
                                                      else "")
                    + " (read over Modbus after the daemon stopped)")
        wrong = [f"{name} setpoint {value}" for name, value in self.setpoints.items()
                 if value != 0.0] + [f"valve {name} {'open' if value is True else value}"
                                     for name, value in self.valves.items() if value is not False]
        return f"NOT CONFIRMED SAFE: {'; '.join(wrong)}"


def _ports_from(config: StationConfig, workdir: Path) -> StationConfig:
    """The config with its relative serial port paths taken from `workdir` (the children's
    working directory), so this process reaches the same ptys."""
    lines = {name: line.model_copy(update={"port": str(workdir / line.port)})
             if line.port is not None and not Path(line.port).is_absolute() else line
             for name, line in config.lines.items()}
    return config.model_copy(update={"lines": lines})


async def check_safe(config: StationConfig, workdir: Path) -> SafeCheck:
    """Read every MFC's setpoint and every valve's coil from the simulated devices."""
    devices = build_devices(_ports_from(config, workdir))
    setpoints: dict[str, float | str] = {}
    valves: dict[str, bool | str] = {}
    try:
        for name, mfc in devices.mfcs.items():
            try:
                setpoints[name] = await asyncio.wait_for(mfc.read("setpoint"), READ_TIMEOUT_S)
            except (ModbusError, TimeoutError) as error:
                setpoints[name] = f"unreadable ({error or 'timeout'})"
        for name, valve in devices.valves.items():
            try:
                valves[name] = await asyncio.wait_for(valve.is_open(), READ_TIMEOUT_S)
            except (ModbusError, TimeoutError) as error:
                valves[name] = f"unreadable ({error or 'timeout'})"
    finally:
        devices.close()
    return SafeCheck(setpoints, valves)
