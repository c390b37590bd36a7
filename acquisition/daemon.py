"""The acquisition daemon: zero everything, poll every MFC, record, and zero again on exit.

Start-up order matters for safety: the store is opened (so that what happens is
recorded), then every MFC is driven to zero before any polling starts. On any way
out (stop request, signal, error) the pollers stop, every MFC is zeroed again, the
remaining samples are committed and the store is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from acquisition import __version__
from acquisition.bus import SampleBus
from acquisition.config import StationConfig, config_hash
from acquisition.devices import StationDevices, build_devices
from acquisition.poller import MfcPoller
from acquisition.recorder import Recorder
from acquisition.safety import zero_all
from acquisition.store import Store

log = structlog.get_logger(__name__)


async def cancel_and_wait(tasks: list[asyncio.Task[None]], patience_s: float = 5.0) -> None:
    """Cancel tasks and wait for them, cancelling again any that swallowed the cancel."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience_s
    pending = {task for task in tasks if not task.done()}
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    if pending:
        log.error("tasks did not stop", tasks=sorted(task.get_name() for task in pending))


class Daemon:
    """One station's acquisition: owns the store, the devices and their tasks."""

    def __init__(self, config: StationConfig) -> None:
        self.config = config
        self.store = Store(config.storage.path)
        self.bus = SampleBus()
        self.devices: StationDevices = build_devices(config)
        self.recorder = Recorder(
            self.store, self.bus.subscribe("recorder"), config.acquisition.commit_interval_s
        )
        self.pollers: dict[str, MfcPoller] = {}

    async def event(self, kind: str, detail: dict[str, Any]) -> None:
        await self.store.add_event(kind, detail)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; always leaves every MFC commanded to zero."""
        tasks: list[asyncio.Task[None]] = []
        try:
            await self.store.open()
            await self.event("daemon.start", {
                "station": self.config.station, "software": __version__,
                "config_hash": config_hash(self.config),
            })
            confirmed = await self._zero_everything("start-up")
            period = 1.0 / self.config.acquisition.sample_rate_hz
            for name, mfc in self.devices.mfcs.items():
                poller = MfcPoller(mfc, self.bus, period,
                                   self.config.acquisition.zero_timeout_s, self.event,
                                   zero_confirmed=confirmed[name] is None)
                self.pollers[name] = poller
                tasks.append(asyncio.create_task(poller.run(), name=f"poll:{name}"))
            tasks.append(asyncio.create_task(self.recorder.run(), name="recorder"))
            log.info("acquiring", station=self.config.station, mfcs=list(self.devices.mfcs),
                     store=str(self.config.storage.path))
            await self._wait(stop, tasks)
        finally:
            await self._shutdown(tasks)

    async def _wait(self, stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
        """Return when asked to stop; re-raise if a task died (a bug), so we shut down."""
        stopper = asyncio.create_task(stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        for task in done:
            if task is not stopper:
                task.result()  # raises the task's exception
                raise RuntimeError(f"task {task.get_name()} ended unexpectedly")

    async def _zero_everything(self, why: str) -> dict[str, str | None]:
        for line in self.devices.lines.values():
            line.retry_now()
        results = await zero_all(self.devices.mfcs.values(),
                                 self.config.acquisition.zero_timeout_s)
        failed = {name: problem for name, problem in results.items() if problem}
        if self.store.is_open:
                await self.event("safety.zeroed", {"why": why, "devices": sorted(results),
                                               "unconfirmed": failed})
        if failed:
            log.error("could not confirm zero flow", why=why, devices=failed)
        else:
            log.info("all MFCs zeroed", why=why, devices=sorted(results))
        return results

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        for poller in self.pollers.values():
            poller.stopping = True
        await cancel_and_wait(tasks)
        try:
            await self._zero_everything("shutdown")
        finally:
            try:
                if self.store.is_open:
                    await self.recorder.flush()
                    await self.event("daemon.stop", {
                        "samples_recorded": self.recorder.committed,
                        "samples_dropped": self.recorder.subscription.dropped_samples,
                    })
            finally:
                self.devices.close()
                await self.store.close()
                log.info("stopped", samples_recorded=self.recorder.committed)
