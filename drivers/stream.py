"""Line-oriented device streams (GNSS, weather station, analyzers): serial, TCP or a file.

A live stream reconnects by itself with backoff when the adapter vanishes or the TCP
peer goes away; a file is read once. Reading never blocks the event loop: the serial
port is non-blocking and watched with `add_reader`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Literal

import serial
import structlog
from pydantic import Field, model_validator

from drivers.endpoint import Backoff, Endpoint

log = structlog.get_logger(__name__)
CHUNK = 4096


class StreamLostError(Exception):
    """The stream's port or peer went away."""


class StreamSettings(Endpoint):
    """Where a streaming device is: `transport` and the keys that go with it."""

    transport: Literal["serial", "tcp", "file"] = "serial"
    path: Path | None = Field(None, description="capture file to read (transport = 'file')")

    @model_validator(mode="after")
    def _endpoint_given(self) -> StreamSettings:
        if self.transport == "serial" and not self.port:
            raise ValueError("a serial stream needs `port`")
        if self.transport == "tcp" and not (self.host and self.tcp_port):
            raise ValueError("a tcp stream needs `host` and `tcp_port`")
        if self.transport == "file" and not self.path:
            raise ValueError("a file stream needs `path`")
        return self

    @property
    def endpoint(self) -> str:
        if self.transport == "serial":
            return str(self.port)
        if self.transport == "tcp":
            return self.tcp_address
        return str(self.path)


async def _serial_chunks(settings: StreamSettings) -> AsyncIterator[bytes]:
    try:
        port = serial.Serial(settings.port, settings.baudrate, bytesize=settings.bytesize,
                             parity=settings.parity, stopbits=settings.stopbits, timeout=0,
                             exclusive=True)
    except (serial.SerialException, OSError) as error:
        raise StreamLostError(f"cannot open {settings.port}: {error}") from None
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | Exception] = asyncio.Queue()

    def readable() -> None:
        try:
            data = port.read(CHUNK)
            queue.put_nowait(data if data else StreamLostError(f"{settings.port}: closed"))
        except (serial.SerialException, OSError) as error:
            queue.put_nowait(StreamLostError(f"{settings.port}: {error}"))

    loop.add_reader(port.fileno(), readable)
    try:
        while True:
            item = await queue.get()
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        loop.remove_reader(port.fileno())
        port.close()


async def _tcp_chunks(settings: StreamSettings) -> AsyncIterator[bytes]:
    try:
        reader, writer = await asyncio.open_connection(settings.host, settings.tcp_port)
    except OSError as error:
        raise StreamLostError(f"cannot connect to {settings.endpoint}: {error}") from None
    try:
        while data := await reader.read(CHUNK):
            yield data
        raise StreamLostError(f"{settings.endpoint}: closed by peer")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _file_chunks(settings: StreamSettings) -> AsyncIterator[bytes]:
    assert settings.path is not None
    try:
        data = await asyncio.to_thread(settings.path.read_bytes)
    except OSError as error:
        raise StreamLostError(f"cannot read {settings.path}: {error}") from None
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]
        await asyncio.sleep(0)


OPENERS = {"serial": _serial_chunks, "tcp": _tcp_chunks, "file": _file_chunks}


async def stream_chunks(
    name: str, settings: StreamSettings,
    on_state: Callable[[bool, str], None] | None = None,
) -> AsyncIterator[bytes]:
    """Bytes from the device for as long as the caller reads; reconnects live streams."""
    opener = OPENERS[settings.transport]
    if settings.transport == "file":
        async for chunk in opener(settings):
            yield chunk
        return
    backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s)
    up: bool | None = None
    while True:
        try:
            async for chunk in opener(settings):
                if up is not True:
                    up = True
                    backoff.reset()
                    log.info("stream up", device=name, endpoint=settings.endpoint)
                    if on_state:
                        on_state(True, "receiving")
                yield chunk
        except StreamLostError as error:
            if up is not False:
                up = False
                log.warning("stream down", device=name, reason=str(error))
                if on_state:
                    on_state(False, str(error))
        await asyncio.sleep(backoff.next_delay())
