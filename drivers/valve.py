"""Normally-closed shutoff valve on a Modbus relay output: open only while releasing.

Every command is verified by reading the coil back, so "closed" in the record means the
relay said so, not merely that it was asked.
"""

from __future__ import annotations

from drivers.modbus_line import ModbusError, ModbusLine


class ValveError(ModbusError):
    """The relay did not end up in the state it was commanded to."""


class ShutoffValve:
    def __init__(self, name: str, line: ModbusLine, unit_id: int, coil: int) -> None:
        self.name = name
        self.line = line
        self.unit_id = unit_id
        self.coil = coil

    async def is_open(self) -> bool:
        return (await self.line.read_coils(self.unit_id, self.coil))[0]

    async def set_open(self, wanted: bool) -> None:
        await self.line.write_coil(self.unit_id, self.coil, wanted)
        if await self.is_open() != wanted:
            state = "open" if wanted else "closed"
            raise ValveError(f"valve {self.name}: commanded {state} but the relay reads back "
                             f"{'closed' if wanted else 'open'}")

    async def open(self) -> None:
        await self.set_open(True)

    async def close(self) -> None:
        await self.set_open(False)
