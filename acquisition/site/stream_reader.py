"""What every reader of a streaming device shares: the read loop over drivers.stream, the
connection figures for health, and logging a recurring failure at most once per
LOG_EVERY_S (a device repeating a bad line every second must not flood the log).

A subclass says what a chunk of bytes holds (`feed`); its decoder keeps the counts and
drops a line cut short when the link goes down or a capture file ends (`flush`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from typing import Generic, Protocol, TypeVar

from acquisition.samples.bus import SampleBus
from drivers.stream import StreamSettings, stream_chunks

LOG_EVERY_S = 60.0
LOGGED_CHARS = 120  # enough of an offending line or error to recognise it


class Flushable(Protocol):
    def flush(self) -> None: ...


D = TypeVar("D", bound=Flushable)


class StreamReader(ABC, Generic[D]):
    """One streaming device, read by `run` until `stopping` (a capture file: to its end)."""

    def __init__(self, name: str, settings: StreamSettings, bus: SampleBus, decoder: D) -> None:
        self.name = name
        self.settings = settings
        self.bus = bus
        self.decoder = decoder
        self.connected = False
        self.reconnects = 0
        self.stopping = False
        self._down_reported = False
        self._quiet_until_ns: dict[str, int] = {}  # failure -> no log line for it before
        self._unlogged: Counter[str] = Counter()  # failures not logged since the last line

    @abstractmethod
    def feed(self, chunk: bytes) -> None:
        """Decode one chunk of bytes and publish what it held."""

    def _on_state(self, up: bool, reason: str) -> None:
        """stream_chunks reports each change once: an up after a down is a reconnect. A
        line cut by the link going down cannot go on over the next connection: dropped."""
        if up and self._down_reported:
            self.reconnects += 1
        if not up:
            self.decoder.flush()
        self.connected, self._down_reported = up, not up

    async def run(self) -> None:
        chunks = stream_chunks(self.name, self.settings, self._on_state)
        try:
            async for chunk in chunks:
                if self.stopping:
                    break
                self.feed(chunk)
            self.decoder.flush()  # only a file ends: count a last line cut short
        finally:
            await chunks.aclose()

    def _log_due(self, failure: str, mono_ns: int) -> int | None:
        """None if `failure` was logged less than LOG_EVERY_S ago (it is tallied); else
        log it now: how many went unlogged since its last line."""
        if mono_ns < self._quiet_until_ns.get(failure, mono_ns):
            self._unlogged[failure] += 1
            return None
        self._quiet_until_ns[failure] = mono_ns + int(LOG_EVERY_S * 1e9)
        return self._unlogged.pop(failure, 0)
