"""A device that talks unasked: one burst of NMEA sentences per epoch on its port.

Epochs follow the host's wall clock (plus the device's own clock offset), so that
a receiver's bursts fall on whole tenths of its UTC seconds as real ones do.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from simulators.line_faults import LineFaults
from simulators.stream_port import StreamPort


class StreamDevice(ABC):
    """Talks on `port` from start() to stop(); unplugging the port loses what it says."""

    def __init__(self, name: str, port: StreamPort, rng: np.random.Generator) -> None:
        self.name = name
        self.port = port
        self.rng = rng
        self.faults = LineFaults(rng)
        self.sentences_sent = 0  # put on the open port, corrupted ones included
        self.sentences_corrupted = 0
        self._task: asyncio.Task[None] | None = None
        self._spoke = asyncio.Condition()  # notified after every epoch's burst

    @property
    def endpoint(self) -> str:
        return self.port.endpoint

    @abstractmethod
    def next_epoch(self, now: float) -> float:
        """The host time (time.time()) of the first burst after `now`."""

    @abstractmethod
    def burst(self, epoch: float) -> list[bytes]:
        """The sentences of the epoch due at host time `epoch`, each ending in CRLF."""

    @abstractmethod
    def describe(self) -> str:
        """What it is and where, for `crf sim` (the name is printed before it)."""

    async def start(self) -> None:
        await self.port.start()
        self._task = asyncio.create_task(self._talk(), name=f"sim talker {self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None
        await self.port.stop()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds; checked now and after every epoch (when the
        device's counters change), so that a test awaits the device instead of sleeping."""
        async with self._spoke:
            await self._spoke.wait_for(condition)

    async def unplug(self, seconds: float) -> None:
        """The port vanishes for `seconds` (the device is powered by it: it says nothing)."""
        await self.port.unplug(seconds)

    async def _talk(self) -> None:
        epoch = self.next_epoch(time.time())
        while True:
            await asyncio.sleep(epoch - time.time())
            lines = self.burst(epoch)
            data, corrupted = self.faults.apply(lines)
            if self.port.send(data):
                self.sentences_sent += len(lines)
                self.sentences_corrupted += corrupted
            async with self._spoke:
                self._spoke.notify_all()
            epoch = self.next_epoch(max(epoch, time.time()))
