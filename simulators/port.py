"""What every simulated port offers: start, stop, and pulling the plug for a while."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

import structlog

log = structlog.get_logger(__name__)


class SimPort(ABC):
    """A pty or TCP listener a client reaches the simulated device(s) through."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._running = False  # started and not stopped: an unplugged port comes back
        # Set from the moment unplug() has taken the port away until it is back, so that a
        # test can await the port being gone.
        self.unplugged = asyncio.Event()

    @property
    @abstractmethod
    def endpoint(self) -> str:
        """Where a client finds the port: a path or host:port."""

    async def start(self) -> None:
        await self._open()
        self._running = True

    async def stop(self) -> None:
        self._running = False
        await self._close()

    async def unplug(self, seconds: float) -> None:
        """The port vanishes, and comes back after `seconds` (unless stopped meanwhile)."""
        await self._close()
        self.unplugged.set()
        log.info("sim port unplugged", port=self.name, seconds=seconds)
        await asyncio.sleep(seconds)
        if self._running:
            await self._open()
            self.unplugged.clear()
            log.info("sim port replugged", port=self.name, endpoint=self.endpoint)

    @abstractmethod
    async def _open(self) -> None:
        """Make the port appear and start serving it."""

    @abstractmethod
    async def _close(self) -> None:
        """Make the port disappear; a no-op when it is not open."""
