"""Ports for devices that talk unasked (NMEA): a pty at the serial port path, or a TCP
server that streams to every client, like a receiver's raw NMEA port.

Nobody listening loses the bytes, as on a real serial line: a pty keeps at most one
epoch of output its client has not read, so a client opening the port late does not
get a backlog of stale sentences (which would look like a clock offset).
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from pathlib import Path

import structlog

from drivers.stream import StreamSettings
from simulators.port import SimPort
from simulators.pty import Pty
from simulators.tcp_server import ConnectionServer

log = structlog.get_logger(__name__)

MAX_CLIENT_BACKLOG = 64 * 1024  # bytes queued for a TCP client that does not read: drop it


class StreamPort(SimPort):
    """Where a talking device's output goes while the port is open."""

    @abstractmethod
    def send(self, data: bytes) -> bool:
        """Put bytes on the port; False if it is closed (unplugged or stopped)."""


async def _discard(reader: asyncio.StreamReader) -> None:
    """Read and forget what a client writes (a receiver's NMEA port ignores it)."""
    while await reader.read(4096):
        pass


class PtyStreamPort(StreamPort):
    """A talking device's serial port: a pty symlinked at `path`."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(name)
        self.pty = Pty(path)
        self._drain: asyncio.Task[None] | None = None
        self._last_sent = 0

    @property
    def endpoint(self) -> str:
        return str(self.pty.path)

    async def _open(self) -> None:
        reader = await self.pty.open()
        self._drain = asyncio.create_task(_discard(reader), name=f"sim port {self.name}")

    def send(self, data: bytes) -> bool:
        if not self.pty.is_open:
            return False
        if self._last_sent and self.pty.unread() >= self._last_sent:
            self.pty.discard_unread()  # not a byte of the last epoch was read: nobody listens
        self._last_sent = len(data)
        return self.pty.write(data)

    async def _close(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
            await asyncio.wait({self._drain})
            self._drain = None
        self._last_sent = 0
        self.pty.close(replug=self._running)


class TcpStreamPort(StreamPort):
    """A raw NMEA TCP port: every connected client gets every byte from its connection on."""

    def __init__(self, name: str, host: str | None, port: int | None) -> None:
        super().__init__(name)
        self.host, self.port = host, port
        self._server = ConnectionServer(name, self._serve_client)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    async def _open(self) -> None:
        await self._server.open(self.host, self.port)

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await _discard(reader)

    def send(self, data: bytes) -> bool:
        if not self._server.is_open:
            return False
        for writer in self._server.writers:
            if writer.transport.get_write_buffer_size() > MAX_CLIENT_BACKLOG:
                log.info("sim dropping a client that does not read", port=self.name)
                writer.close()
            else:
                writer.write(data)
        return True

    async def _close(self) -> None:
        await self._server.close()


def stream_port(name: str, settings: StreamSettings) -> StreamPort:
    """The port a device config names: transport 'serial' or 'tcp'."""
    if settings.transport == "serial":
        return PtyStreamPort(name, Path(settings.port or ""))
    if settings.transport == "tcp":
        return TcpStreamPort(name, settings.host, settings.tcp_port)
    raise ValueError(f"transport '{settings.transport}' is not simulated")
