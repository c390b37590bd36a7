"""Split a slave's incoming byte stream into request PDUs with a pymodbus framer.

pymodbus's FramerRTU reports the whole buffer as used once it finds a frame (and drops
the whole buffer on a CRC error), so requests that arrive back to back would be lost:
the stream finds where the decoded request really ends and keeps what follows.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerBase
from pymodbus.pdu import ModbusPDU


class FramingError(Exception):
    """The stream cannot be resynchronised (e.g. a bad MBAP header on a TCP connection)."""


@dataclass(frozen=True)
class Request:
    pdu: ModbusPDU
    size: int  # bytes of the frame on the wire
    received_at: float  # time.monotonic() when its first byte arrived


class RequestStream:
    """A buffer of received bytes and the requests framed in it."""

    def __init__(self, framer: FramerBase, *, resync: bool) -> None:
        """`resync`: drop garbage and carry on (serial) instead of failing (TCP)."""
        self.framer = framer
        self._resync = resync
        self._buffer = bytearray()
        self._first_byte_at = 0.0

    @property
    def pending(self) -> bool:
        return bool(self._buffer)

    def feed(self, data: bytes, now: float) -> None:
        if not self._buffer:
            self._first_byte_at = now
        self._buffer += data

    def drop(self) -> None:
        """Forget a partial frame: a real slave does so after 3.5 characters of silence."""
        self._buffer.clear()

    def next_request(self) -> Request | None:
        """The next complete request, or None until more bytes arrive."""
        while self._buffer:
            data = bytes(self._buffer)
            try:
                used, pdu = self.framer.handleFrame(data, 0, 0)
            except ModbusException:  # undecodable (count 0, function 43, ...): ignored
                self._buffer.clear()
                return None
            if pdu is not None:
                frame = self.framer.buildFrame(pdu)
                start = data.find(frame)
                end = start + len(frame) if start >= 0 else used
                del self._buffer[:end]
                return Request(pdu, len(frame), self._first_byte_at)
            if used:  # a bad frame (CRC error): the framer discarded these bytes
                del self._buffer[:used]
                continue
            if len(self._buffer) > self.framer.MAX_SIZE:
                if not self._resync:
                    raise FramingError(f"no valid frame in {len(self._buffer)} bytes")
                self._buffer.clear()
            return None
        return None
