"""Line splitting of device byte streams, shared by the NMEA and the gas analyzer decoders.

Devices end lines with CR, LF or CRLF; captures carry `#` annotation lines; a stream may
stop in the middle of a line or send a long run of bytes with no line end at all (binary
frames, a wrong baud rate). The splitter deals with all of that the same way for every
protocol, counting in the decoder's `stats`; what a line may hold is each decoder's call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

RUNAWAY_LINES = 4  # bytes without a line end kept before dropping: this many longest lines


class LineSplitter:
    """Splits bytes into lines, without their line ends; counts `comments` (`#` lines),
    `truncated` (a line cut short, see `flush`) and dropped `junk_bytes`."""

    def __init__(self, stats: Counter[str], max_line: int, resync: bytes = b"") -> None:
        """`max_line`: the longest line a decoder takes; `resync`: the byte that starts a
        line (NMEA's `$`), where to pick up again after a run without line ends."""
        self.stats = stats
        self.max_line = max_line
        self.resync = resync
        self.pending = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Every complete, non-empty line that is not a comment, in order."""
        self.pending.extend(data)
        while True:
            cut = min((i for i in (self.pending.find(b"\r"), self.pending.find(b"\n"))
                       if i >= 0), default=-1)
            if cut < 0:
                self._drop_runaway()
                return
            line = bytes(self.pending[:cut])
            del self.pending[: cut + 1]
            if line.startswith(b"#"):
                self.stats["comments"] += 1
            elif line:
                yield line

    def flush(self) -> None:
        """At the end of a file or a connection: a line without its line end is truncated
        (it cannot go on over the next connection)."""
        if self.pending:
            self.stats["truncated"] += 1
            self.pending = bytearray()

    def _drop_runaway(self) -> None:
        """No line end in sight (a long binary run): junk, but for a line just begun."""
        if len(self.pending) <= RUNAWAY_LINES * self.max_line:
            return
        start = (self.pending.rfind(self.resync, len(self.pending) - self.max_line)
                 if self.resync else -1)
        drop = start if start >= 0 else len(self.pending)
        self.stats["junk_bytes"] += drop
        del self.pending[:drop]
