"""The slaves of one line: route requests by unit id, apply faults, answer at bus timing.

Everything a transport needs is one call, `serve_stream`, so a pty, an RTU-over-TCP
gateway and a Modbus TCP server behave the same apart from framing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from pymodbus.framer import FramerBase, FramerRTU

from simulators.framing import FramingError, Request, RequestStream
from simulators.modbus_device import SlaveDevice
from simulators.pacing import BusTiming, sleep_until

log = structlog.get_logger(__name__)

# A real slave drops a partial frame after 3.5 characters of silence; a pty delivers
# one write at once, so any silence this long means the rest is never coming.
RESYNC_SILENCE_S = 0.05

Send = Callable[[bytes], None]


def corrupt(frame: bytes, framer: FramerBase) -> bytes:
    """A reply the master must discard: a wrong CRC (RTU) or transaction id (MBAP)."""
    if isinstance(framer, FramerRTU):
        return frame[:-1] + bytes([frame[-1] ^ 0xFF])
    return bytes([frame[0] ^ 0xFF]) + frame[1:]


class SlaveBus:
    """The devices sharing one line; one transaction at a time, as on RS-485."""

    def __init__(self, devices: dict[int, SlaveDevice], timing: BusTiming | None,
                 on_request: Callable[[], Awaitable[None]] | None = None) -> None:
        """`timing` None answers at once; otherwise replies leave at the line's byte rate.
        `on_request` is awaited after every request a device handled (state may differ)."""
        self.devices = devices
        self.timing = timing
        self.on_request = on_request
        self.transactions = 0  # replies sent
        # The cable between the master and the devices is cut: the port is still there,
        # requests go nowhere, and every device keeps its setpoint and coils.
        self.cable_pulled = False
        self._lock = asyncio.Lock()
        self._free_at = 0.0
        self._late: set[asyncio.Task[None]] = set()

    async def serve_stream(
        self, reader: asyncio.StreamReader, send: Send, framer: FramerBase
    ) -> None:
        """Answer every request read from `reader` until it ends."""
        rtu = isinstance(framer, FramerRTU)
        stream = RequestStream(framer, resync=rtu)
        while True:
            try:
                async with asyncio.timeout(RESYNC_SILENCE_S if rtu and stream.pending else None):
                    data = await reader.read(4096)
            except TimeoutError:
                stream.drop()
                continue
            if not data:
                return
            stream.feed(data, time.monotonic())
            try:
                while (request := stream.next_request()) is not None:
                    await self.answer(request, framer, send)
            except FramingError as error:
                log.warning("sim dropping connection", reason=str(error))
                return

    async def answer(self, request: Request, framer: FramerBase, send: Send) -> None:
        device = self.devices.get(request.pdu.dev_id)
        if device is None or self.cable_pulled:
            return  # another slave's address (or a broadcast), or nobody hears it
        async with self._lock:
            # On a real bus a request cannot start before the previous reply ended.
            started = max(request.received_at, self._free_at)
            try:
                response = await device.handle(request.pdu)
            except Exception:  # a model bug must not silence the whole line
                log.exception("sim device failed", device=device.name)
                return
            if self.on_request is not None:
                await self.on_request()
            if response is None:
                return
            frame = framer.buildFrame(response)
            fault = device.fault
            if fault is not None and fault.kind == "bad_crc":
                frame = corrupt(frame, framer)
            deadline = started
            if self.timing is not None:
                deadline += self.timing.transaction_s(request.size, len(frame))
            if fault is not None and fault.kind == "slow":
                # A late slave does not hold the bus while it dawdles.
                self._send_late(deadline + fault.seconds, frame, send)
                return
            await sleep_until(deadline)
            send(frame)
            self.transactions += 1
            self._free_at = time.monotonic()

    def _send_late(self, at: float, frame: bytes, send: Send) -> None:
        async def later() -> None:
            await sleep_until(at)
            send(frame)
            self.transactions += 1

        task = asyncio.create_task(later(), name="sim late reply")
        self._late.add(task)
        task.add_done_callback(self._late.discard)

    async def late_replies_sent(self) -> None:
        """Return once every reply still on its way (a `slow` device's) has been sent or
        cancelled: a test awaits it rather than guessing when the last one went out."""
        while self._late:
            await asyncio.wait(set(self._late))

    async def cancel_late(self) -> None:
        """Forget replies still on their way: the port they were for has gone."""
        tasks = list(self._late)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
