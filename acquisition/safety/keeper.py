"""The safety invariant: a device that is not confirmed safe is retried until it is.

Every way gas stops (the end of a step, a pause, an abort, an interlock, an error, the
end of `crf run`, a daemon stop) goes through `make_safe`. A device whose zero flow or
closed valve could not be confirmed (the cable was pulled, the adapter unplugged, the
device silent) is kept as *unconfirmed*: an alarm in the status, retried every
`safety.safe_retry_s` for as long as no release commands it, and confirmed the moment it
answers. Real MFCs and relays keep their setpoint and valve state while the bus is dead,
so "it was zeroed before the cable came out" is never assumed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from acquisition.events import EventSink
from acquisition.safety.zeroing import make_all_safe
from drivers.mfc import MfcDriver
from drivers.valve import ShutoffValve

log = structlog.get_logger(__name__)

REMIND_S = 5.0  # how often a still-unconfirmed device is logged again
Device = MfcDriver | ShutoffValve


class SafeStateKeeper:
    """Owns the set of devices not confirmed safe and keeps driving them safe."""

    def __init__(self, timeout_s: float, retry_s: float, emit: EventSink) -> None:
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.emit = emit
        self.late_confirmations = 0
        self._unconfirmed: dict[str, tuple[Device, str]] = {}
        self._in_use: set[str] = set()  # commanded open by a release right now
        self._changed = asyncio.Condition()
        self._last_reminder = 0.0

    def unconfirmed(self) -> dict[str, str]:
        """Each device not confirmed safe, with why (the alarm shown in the status)."""
        return {name: why for name, (_, why) in self._unconfirmed.items()}

    def health(self) -> dict[str, Any]:
        return {"unconfirmed": self.unconfirmed(),
                "late_confirmations": self.late_confirmations}

    def claim(self, devices: Iterable[Device]) -> None:
        """A release now commands these devices: they are the run's, not retried here."""
        for device in devices:
            self._in_use.add(device.name)
            self._unconfirmed.pop(device.name, None)

    async def make_safe(self, mfcs: Iterable[MfcDriver], valves: Iterable[ShutoffValve]
                        ) -> dict[str, str | None]:
        """Zero these MFCs and close these valves; remember every one not confirmed."""
        mfcs, valves = list(mfcs), list(valves)
        for device in [*mfcs, *valves]:
            self._in_use.discard(device.name)
        results = await make_all_safe(mfcs, valves, self.timeout_s)
        await self._record({device.name: device for device in [*mfcs, *valves]}, results)
        return results

    async def _record(self, devices: dict[str, Device], results: dict[str, str | None]
                      ) -> None:
        for name, problem in results.items():
            if problem is None:
                if self._unconfirmed.pop(name, None) is not None:
                    self.late_confirmations += 1
                    log.warning("device confirmed safe after all", device=name)
                    await self.emit("safety.confirmed", {"device": name, "late": True})
            elif name not in self._in_use:
                if name not in self._unconfirmed:
                    log.error("device not confirmed safe", device=name, reason=problem)
                self._unconfirmed[name] = (devices[name], problem)
        async with self._changed:
            self._changed.notify_all()

    async def retry(self) -> None:
        """One more attempt at every unconfirmed device."""
        due = [device for device, _ in self._unconfirmed.values()]
        for device in due:
            device.line.retry_now()  # an adapter that is back must not wait out a backoff
        await self.make_safe([d for d in due if isinstance(d, MfcDriver)],
                             [d for d in due if isinstance(d, ShutoffValve)])
        self._remind()

    def _remind(self) -> None:
        now = time.monotonic()
        if self._unconfirmed and now - self._last_reminder >= REMIND_S:
            self._last_reminder = now
            log.error("devices still not confirmed safe, retrying",
                      every_s=self.retry_s, devices=self.unconfirmed())

    async def until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds; checked after every attempt to make safe."""
        async with self._changed:
            await self._changed.wait_for(condition)

    async def run(self) -> None:
        """Retry unconfirmed devices every `retry_s`; idle while every device is safe."""
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._unconfirmed))
            await self.retry()
            await asyncio.sleep(self.retry_s)

    async def wait_confirmed(self, within_s: float) -> None:
        """Retry until every device is confirmed safe or `within_s` has passed (when the
        keeper's own task no longer runs: at shutdown); `unconfirmed()` says which are left."""
        deadline = time.monotonic() + within_s
        while self._unconfirmed and time.monotonic() < deadline:
            await self.retry()
            if self._unconfirmed:
                await asyncio.sleep(min(self.retry_s, max(deadline - time.monotonic(), 0)))
