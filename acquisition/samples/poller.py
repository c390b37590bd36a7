"""Polls one Modbus device at a fixed rate, publishes its samples, tracks its health.

Polling only reads: driving a device that is not confirmed safe back to its safe state
is the safe-state keeper's job (acquisition.safety.keeper).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from acquisition.events import EventSink
from acquisition.samples.bus import SampleBus
from drivers.mfc import ModbusDevice
from drivers.sample import Quality, Sample

log = structlog.get_logger(__name__)

class DevicePoller:
    """Periodic polling of one device with health events (fault / recovered)."""

    def __init__(
        self,
        device: ModbusDevice,
        bus: SampleBus,
        period_s: float,
        emit: EventSink,
    ) -> None:
        self.device = device
        self.bus = bus
        self.period_s = period_s
        self.emit = emit
        self.polls = 0
        self.stopping = False
        self._fault: Quality | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        # The flag, not only cancellation, ends the loop: Python 3.11's timeouts can
        # swallow a cancel that lands just as a device timeout fires.
        while not self.stopping:
            samples = await self.device.poll()
            self.polls += 1
            self.bus.publish(samples)
            await self._track_health(samples)
            next_poll += self.period_s
            now = loop.time()
            if next_poll < now:  # fell behind (slow device): skip, do not burst
                next_poll = now
            await asyncio.sleep(next_poll - now)

    def health(self) -> dict[str, Any]:
        """Polls so far and the fault the device shows now (None when it answers well)."""
        return {"polls": self.polls, "fault": self._fault.value if self._fault else None}

    async def _track_health(self, samples: list[Sample]) -> None:
        """Emit an event when the device's health changes kind, not on every bad poll."""
        bad = next((s for s in samples if s.quality is not Quality.OK), None)
        kind = bad.quality if bad else None
        if kind == self._fault:
            return
        previous, self._fault = self._fault, kind
        name = self.device.name
        if bad is None:
            log.info("device recovered", device=name, was=previous)
            await self.emit("device.recovered", {"device": name, "was": previous})
        else:
            log.warning("device fault", device=name, quality=bad.quality, detail=bad.detail)
            await self.emit("device.fault", {"device": name, "quality": bad.quality.value,
                                             "detail": bad.detail})
