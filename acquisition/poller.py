"""Polls one MFC at a fixed rate, publishes its samples, and keeps it at a known-safe state.

A device that could not be zeroed (unreachable at start-up, or back after an outage) is
zeroed again before anything else as soon as it answers: the daemon never assumes a
device it has not confirmed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from acquisition.bus import SampleBus
from acquisition.safety import zero_one
from drivers.mfc import MfcDriver
from drivers.sample import Quality, Sample

log = structlog.get_logger(__name__)

EventSink = Callable[[str, dict[str, Any]], Awaitable[object]]


class MfcPoller:
    """Periodic polling of one MFC with health tracking (fault / recovered events)."""

    def __init__(
        self,
        mfc: MfcDriver,
        bus: SampleBus,
        period_s: float,
        zero_timeout_s: float,
        emit: EventSink,
        zero_confirmed: bool,
    ) -> None:
        self.mfc = mfc
        self.bus = bus
        self.period_s = period_s
        self.zero_timeout_s = zero_timeout_s
        self.emit = emit
        self.zero_confirmed = zero_confirmed
        self.polls = 0
        self.stopping = False
        self._fault: Quality | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        # The flag, not only cancellation, ends the loop: Python 3.11's timeouts can
        # swallow a cancel that lands just as a device timeout fires.
        while not self.stopping:
            if not self.zero_confirmed:
                await self._retry_zero()
            samples = await self.mfc.poll()
            self.polls += 1
            self.bus.publish(samples)
            await self._track_health(samples)
            next_poll += self.period_s
            now = loop.time()
            if next_poll < now:  # fell behind (slow device): skip, do not burst
                next_poll = now
            await asyncio.sleep(next_poll - now)

    async def _retry_zero(self) -> None:
        problem = await zero_one(self.mfc, self.zero_timeout_s)
        if problem is None:
            self.zero_confirmed = True
            log.info("mfc zeroed", device=self.mfc.name)
            await self.emit("safety.zeroed", {"device": self.mfc.name, "late": True})

    async def _track_health(self, samples: list[Sample]) -> None:
        """Emit an event when the device's health changes kind, not on every bad poll."""
        bad = next((s for s in samples if s.quality is not Quality.OK), None)
        kind = bad.quality if bad else None
        if kind == self._fault:
            return
        previous, self._fault = self._fault, kind
        if bad is None:
            log.info("device recovered", device=self.mfc.name, was=previous)
            await self.emit("device.recovered", {"device": self.mfc.name, "was": previous})
        else:
            log.warning("device fault", device=self.mfc.name, quality=bad.quality,
                        detail=bad.detail)
            await self.emit("device.fault", {"device": self.mfc.name,
                                             "quality": bad.quality.value,
                                             "detail": bad.detail})
