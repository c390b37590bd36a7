"""A serial line as a pty, linked at the configured port path, speaking Modbus RTU."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU

from drivers.modbus_line import LineSettings
from simulators.line import SimLine
from simulators.pty import Pty
from simulators.slave import SlaveBus


class PtyLine(SimLine):
    """RS-485 line on a pseudo-terminal: the master reads the symlinked slave end."""

    def __init__(self, name: str, settings: LineSettings, bus: SlaveBus) -> None:
        super().__init__(name, settings, bus)
        self.pty = Pty(Path(settings.port or ""))
        self._task: asyncio.Task[None] | None = None

    @property
    def pty_name(self) -> str | None:
        return self.pty.name

    async def _open(self) -> None:
        reader = await self.pty.open()
        self._task = asyncio.create_task(
            self.bus.serve_stream(reader, self.pty.write, FramerRTU(DecodePDU(is_server=True))),
            name=f"sim line {self.name}",
        )

    async def _close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            await self.bus.cancel_late()
            self._task = None
        self.pty.close(replug=self._running)
