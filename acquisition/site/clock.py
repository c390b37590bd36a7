"""Host clock against GNSS UTC: track the offset and warn when it passes the limit.

The offset comes from RMC/ZDA sentences stamped on arrival, so it includes the serial
latency (tens of milliseconds): good enough to catch a host clock that is seconds off,
not to discipline it. The median of the last few readings keeps one late line from
raising a warning.
"""

from __future__ import annotations

import statistics
from collections import deque

from acquisition.events import EventSink
from drivers.gnss import GnssInterpreter

WINDOW = 5


class ClockMonitor:
    """Follows one receiver's clock offset; says when it goes beyond and back within limit."""

    def __init__(self, receiver: str, interpreter: GnssInterpreter, limit_s: float,
                 emit: EventSink) -> None:
        self.receiver = receiver
        self.interpreter = interpreter
        self.limit_s = limit_s
        self.emit = emit
        self._recent: deque[float] = deque(maxlen=WINDOW)
        self._readings_seen = 0
        self.exceeded = False

    @property
    def offset_s(self) -> float | None:
        """GNSS UTC minus host clock, median of the last readings; None before any."""
        return statistics.median(self._recent) if self._recent else None

    async def check(self) -> None:
        """Take the receiver's latest offset reading and emit an event on a change."""
        reading = self.interpreter.clock_offset_s
        if reading is None or self.interpreter.clock_readings == self._readings_seen:
            return
        self._readings_seen = self.interpreter.clock_readings
        self._recent.append(reading)
        offset = self.offset_s
        assert offset is not None
        beyond = abs(offset) > self.limit_s
        if beyond != self.exceeded:
            self.exceeded = beyond
            kind = "clock.offset_exceeded" if beyond else "clock.offset_ok"
            await self.emit(kind, {"receiver": self.receiver, "offset_s": round(offset, 4),
                                   "limit_s": self.limit_s})
