"""What every simulated line offers: start, stop, and pulling the plug for a while."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

import structlog

from drivers.modbus_line import LineSettings
from simulators.slave import SlaveBus

log = structlog.get_logger(__name__)


class SimLine(ABC):
    """A port (pty or TCP listener) in front of a SlaveBus."""

    def __init__(self, name: str, settings: LineSettings, bus: SlaveBus) -> None:
        self.name = name
        self.settings = settings
        self.bus = bus
        self._running = False

    @property
    def transactions(self) -> int:
        """Replies sent on this line since it was created."""
        return self.bus.transactions

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint

    async def start(self) -> None:
        await self._open()
        self._running = True

    async def stop(self) -> None:
        self._running = False
        await self._close()

    async def unplug(self, seconds: float) -> None:
        """The port vanishes, and comes back after `seconds` (unless stopped meanwhile)."""
        await self._close()
        log.info("sim line unplugged", line=self.name, seconds=seconds)
        await asyncio.sleep(seconds)
        if self._running:
            await self._open()
            log.info("sim line replugged", line=self.name, endpoint=self.endpoint)

    @abstractmethod
    async def _open(self) -> None:
        """Make the port appear and start serving it."""

    @abstractmethod
    async def _close(self) -> None:
        """Make the port disappear; a no-op when it is not open."""
