"""The latest readings of every channel, and a short history of each MFC's flow.

A listener on the sample bus, so the scheduler (settling, truth windows) and the
interlocks (staleness, thresholds) read the same samples the recorder stores, the moment
they are published.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

from acquisition.samples.bus import SampleBus
from drivers.sample import Sample

HISTORY = 20_000  # flow samples kept per device: hours at a few Hz


class SampleCache:
    def __init__(self, bus: SampleBus, history_channels: set[str]) -> None:
        self.history_channels = history_channels
        self.latest: dict[tuple[str, str], Sample] = {}
        self.last_good_mono_ns: dict[tuple[str, str], int] = {}
        self.history: dict[tuple[str, str], deque[Sample]] = {}
        bus.listen(self.add)

    def add(self, batch: Sequence[Sample]) -> None:
        for sample in batch:
            key = (sample.device, sample.channel)
            self.latest[key] = sample
            if sample.ok:
                self.last_good_mono_ns[key] = sample.mono_ns
            if sample.channel in self.history_channels:
                self.history.setdefault(key, deque(maxlen=HISTORY)).append(sample)

    def since(self, device: str, channel: str, mono_ns: int) -> list[Sample]:
        """Samples of a channel stamped at or after `mono_ns` (history channels only).

        Walks back from the newest only as far as needed: the scheduler asks ten times a
        second, and the history holds hours."""
        recent: list[Sample] = []
        for sample in reversed(self.history.get((device, channel), ())):
            if sample.mono_ns < mono_ns:
                break
            recent.append(sample)
        recent.reverse()
        return recent

    def good_age_s(self, device: str, channel: str) -> float | None:
        """Seconds since the last good reading; None if there never was one."""
        last = self.last_good_mono_ns.get((device, channel))
        return None if last is None else (time.monotonic_ns() - last) / 1e9

    def good_value(self, device: str, channel: str) -> float | None:
        sample = self.latest.get((device, channel))
        return sample.value if sample is not None and sample.ok else None
