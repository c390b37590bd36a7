"""A pty posing as a USB serial adapter: its slave end symlinked at the configured port path.

Shared by the Modbus lines and the talking (NMEA) devices, so that both appear,
vanish and re-enumerate the same way.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import termios
import tty
from pathlib import Path

import structlog

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


class Pty:
    """One pty at a time behind `path`: the client opens the link, we hold the master."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name: str | None = None  # /dev/pts/N while open
        self._master: int | None = None
        self._slave: int | None = None
        self._transport: asyncio.ReadTransport | None = None
        self._spare: tuple[int, int] | None = None

    @property
    def is_open(self) -> bool:
        return self._master is not None

    async def open(self) -> asyncio.StreamReader:
        """Create the pty and link it; the reader gets every byte the client writes."""
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
        self._master, self._slave, self.name = master, slave, os.ttyname(slave)
        return reader

    def write(self, data: bytes) -> bool:
        """Send bytes to the client; False if the port is closed or the bytes are lost."""
        if self._master is None:
            return False
        try:
            os.write(self._master, data)
        except OSError as error:  # nobody reading and the pty buffer full: the bytes are lost
            log.debug("sim bytes lost", port=str(self.path), error=str(error))
            return False
        return True

    def unread(self) -> int:
        """Bytes written to the client that it has not read yet."""
        if self._slave is None:
            return 0
        count = fcntl.ioctl(self._slave, termios.TIOCINQ, struct.pack("i", 0))
        return int(struct.unpack("i", count)[0])

    def discard_unread(self) -> None:
        if self._slave is not None:
            termios.tcflush(self._slave, termios.TCIFLUSH)

    def close(self, *, replug: bool = False) -> None:
        """Hang up the client and remove the link; idempotent.

        `replug`: the next open() must get another pty name, as a USB adapter
        re-enumerates as a new device node while the old one is still held.
        """
        if replug and self._master is not None and self._spare is None:
            self._spare = os.openpty()  # taken while the old pty still holds its number
        elif not replug and self._spare is not None:
            for fd in self._spare:
                os.close(fd)
            self._spare = None
        self._master = None
        if self._transport is not None:
            self._transport.close()  # closes the master end: the client's port hangs up
            self._transport = None
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None
        if self.name is not None:
            unlink_port(self.path, self.name)
            self.name = None
