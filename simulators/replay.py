"""Replay of a receiver capture on a port, at the pace of its own UTC times.

Each GGA, RMC or GNS line whose checksum holds starts a new burst when its time of
day differs from the previous one; every other line (GSA, GSV, proprietary, a line
with a bad checksum) goes out right after the line before it. `#` comment lines and
blank lines are annotations, not receiver output: they are not sent. The capture
loops: after its last burst it starts again one typical epoch interval later, so a
replayed receiver keeps talking like a live one. The lines are sent as recorded
(their old dates included), with CRLF line ends.
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path

import numpy as np
import pynmea2

from simulators.stream_device import StreamDevice
from simulators.stream_port import StreamPort

TIMED = {"GGA", "RMC", "GNS"}
DAY_S = 86_400.0
DEFAULT_INTERVAL_S = 1.0


def _time_of_day(line: str) -> float | None:
    try:
        message = pynmea2.parse(line, check=True)
    except (pynmea2.ParseError, IndexError):  # IndexError: pynmea2 on a short "$PUBX*.."
        return None
    stamp = getattr(message, "timestamp", None)
    kind = getattr(message, "sentence_type", None)  # proprietary sentences may have none
    if kind not in TIMED or stamp is None or isinstance(stamp, str):
        return None
    return stamp.hour * 3600 + stamp.minute * 60 + stamp.second + stamp.microsecond / 1e6


def capture_bursts(data: bytes) -> list[tuple[float, list[bytes]]]:
    """(seconds after the first timed line, lines) for each burst of a capture."""
    bursts: list[tuple[float, list[bytes]]] = [(0.0, [])]
    first = previous = None
    day = 0.0
    for line in data.splitlines():
        if not line.strip() or line.startswith(b"#"):
            continue
        stamp = _time_of_day(line.decode("ascii", errors="replace"))
        if stamp is not None and stamp != previous:
            if previous is not None and stamp < previous - DAY_S / 2:
                day += DAY_S  # past midnight
            if first is None:
                first = stamp + day
            else:
                bursts.append((stamp + day - first, []))
            previous = stamp
        bursts[-1][1].append(line + b"\r\n")
    return [burst for burst in bursts if burst[1]]


class GnssReplay(StreamDevice):
    """Sends a capture file's lines at its own pace, over and over."""

    def __init__(self, name: str, port: StreamPort, path: Path,
                 rng: np.random.Generator) -> None:
        super().__init__(name, port, rng)
        self.path = path
        self.bursts = capture_bursts(path.read_bytes())
        if not self.bursts:
            raise ValueError(f"{path}: no NMEA lines to replay")
        steps = [b[0] - a[0] for a, b in itertools.pairwise(self.bursts) if b[0] > a[0]]
        self.interval_s = statistics.median(steps) if steps else DEFAULT_INTERVAL_S
        self.loops = 0  # times the capture was sent in full
        self._origin: float | None = None
        self._next = 0

    def describe(self) -> str:
        return f"gnss replay={self.path} bursts={len(self.bursts)} at={self.endpoint}"

    def next_epoch(self, now: float) -> float:
        if self._origin is None:
            self._origin = now
        return self._origin + self.bursts[self._next][0]

    def burst(self, epoch: float) -> list[bytes]:
        lines = self.bursts[self._next][1]
        self._next += 1
        if self._next == len(self.bursts):
            assert self._origin is not None
            self._origin += self.bursts[-1][0] + self.interval_s
            self._next = 0
            self.loops += 1
        return lines
