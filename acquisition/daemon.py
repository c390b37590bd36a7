"""The acquisition daemon: zero everything, poll and read every device, record, zero on exit.

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
from acquisition.poller import DevicePoller
from acquisition.recorder import Recorder
from acquisition.safety import zero_all, zero_one
from acquisition.site import Site
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
        self.pollers: dict[str, DevicePoller] = {}
        self.site = Site(config, self.bus, self.store, self.event)

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
            zero_timeout = self.config.acquisition.zero_timeout_s
            for name, mfc in self.devices.mfcs.items():
                self.pollers[name] = DevicePoller(
                    mfc, self.bus, period, self.event,
                    make_safe=lambda mfc=mfc: zero_one(mfc, zero_timeout),
                    safe_confirmed=confirmed[name] is None)
            for name, sensor in self.devices.sensors.items():
                self.pollers[name] = DevicePoller(sensor, self.bus, period, self.event)
            tasks += [asyncio.create_task(poller.run(), name=f"poll:{name}")
                      for name, poller in self.pollers.items()]
            tasks += [asyncio.create_task(reader.run(), name=f"read:{name}")
                      for name, reader in self.site.readers.items()]
            tasks.append(asyncio.create_task(self.site.run_watch(), name="site"))
            tasks.append(asyncio.create_task(self.recorder.run(), name="recorder"))
            log.info("acquiring", station=self.config.station, mfcs=list(self.devices.mfcs),
                     sensors=list(self.devices.sensors), streams=list(self.site.readers),
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
        for worker in [*self.pollers.values(), *self.site.readers.values()]:
            worker.stopping = True
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
