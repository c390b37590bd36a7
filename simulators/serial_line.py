"""A serial line as a pty, linked at the configured port path, speaking Modbus RTU."""

from __future__ import annotations

import asyncio
import os
import tty
from pathlib import Path

import structlog
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU

from drivers.modbus_line import LineSettings
from simulators.line import SimLine
from simulators.slave import SlaveBus

log = structlog.get_logger(__name__)

PTY_PREFIX = "/dev/pts/"


def link_port(path: Path, target: str) -> None:
    """Point `path` at `target` atomically, never clobbering anything but a pty link."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        current = os.readlink(path)
        if not current.startswith(PTY_PREFIX) and path.exists():
            raise FileExistsError(f"{path} links to {current}, not a pty: refusing to replace it")
    elif path.exists():
        raise FileExistsError(f"{path} exists and is not a symlink: refusing to replace it")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary)
    os.replace(temporary, path)


def unlink_port(path: Path, target: str) -> None:
    """Remove `path` if it still points at our pty (another simulator may own it now)."""
    try:
        if os.readlink(path) == target:
            path.unlink()
    except OSError:
        pass


class PtyLine(SimLine):
    """RS-485 line on a pseudo-terminal: the master reads the symlinked slave end."""

    def __init__(self, name: str, settings: LineSettings, bus: SlaveBus) -> None:
        super().__init__(name, settings, bus)
        self.path = Path(settings.port or "")
        self.pty_name: str | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._transport: asyncio.ReadTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self._spare: tuple[int, int] | None = None

    async def _open(self) -> None:
        master, slave = self._spare or os.openpty()
        self._spare = None
        # Our own handle on the slave end keeps the master from reading EIO whenever the
        # client closes the port; raw mode so that no byte is translated or echoed.
        tty.setraw(slave)
        try:
            link_port(self.path, os.ttyname(slave))
        except OSError:
            os.close(master)
            os.close(slave)
            raise
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(master, "rb", buffering=0)
        )
        self._master, self._slave, self.pty_name = master, slave, os.ttyname(slave)
        self._task = asyncio.create_task(
            self.bus.serve_stream(reader, self._send, FramerRTU(DecodePDU(is_server=True))),
            name=f"sim line {self.name}",
        )

    def _send(self, frame: bytes) -> None:
        if self._master is None:
            return
        try:
            os.write(self._master, frame)
        except OSError as error:  # nobody reading and the pty buffer full: the bytes are lost
            log.debug("sim reply lost", line=self.name, error=str(error))

    async def _close(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.wait({self._task})
        await self.bus.cancel_late()
        self._task = None
        self._master = None
        if self._transport is not None:
            self._transport.close()  # closes the master end: the client's port hangs up
            self._transport = None
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None
        if self.pty_name is not None:
            unlink_port(self.path, self.pty_name)

    async def unplug(self, seconds: float) -> None:
        # Taken while the old pty is still open, so the replacement gets another name,
        # as a USB adapter re-enumerates as a new device node while the old one is held.
        self._spare = os.openpty()
        try:
            await super().unplug(seconds)
        finally:
            self._close_spare()

    async def stop(self) -> None:
        await super().stop()
        self._close_spare()

    def _close_spare(self) -> None:
        if self._spare is not None:
            for fd in self._spare:
                os.close(fd)
            self._spare = None
