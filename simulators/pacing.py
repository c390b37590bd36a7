"""RS-485 byte timing (11-bit characters, 3.5-character frame gaps), so that a master on a
pty sees a real line's ceiling."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from drivers.modbus_line import LineSettings

FIXED_GAP_S = 0.00175  # t3.5 above 19200 baud, per the Modbus serial line spec
FIXED_GAP_ABOVE_BAUD = 19200
# asyncio sleeps wake on millisecond ticks, late by up to about one tick: sleep until
# this much before a deadline, then wait out the rest precisely.
SPIN_S = 0.0015


@dataclass(frozen=True)
class BusTiming:
    """Character time and inter-frame gap of one serial line."""

    char_s: float
    gap_s: float

    @classmethod
    def of(cls, settings: LineSettings) -> BusTiming:
        bits = 1 + settings.bytesize + (settings.parity != "N") + settings.stopbits
        char_s = bits / settings.baudrate
        gap_s = FIXED_GAP_S if settings.baudrate > FIXED_GAP_ABOVE_BAUD else 3.5 * char_s
        return cls(char_s, gap_s)

    def transaction_s(self, request_bytes: int, reply_bytes: int) -> float:
        """From the start of the request to the end of the reply on the wire."""
        return (request_bytes + reply_bytes) * self.char_s + 2 * self.gap_s


async def sleep_until(deadline: float) -> None:
    """Wait until time.monotonic() reaches deadline, to within a few microseconds.

    The last stretch blocks the event loop (at most SPIN_S): acceptable in a simulator,
    never in acquisition code.
    """
    remaining = deadline - time.monotonic()
    if remaining > SPIN_S:
        await asyncio.sleep(remaining - SPIN_S)
    while time.monotonic() < deadline:
        pass
