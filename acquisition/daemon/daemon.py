"""The acquisition daemon: zero everything, poll and read every device, record, zero on exit.

Start-up order matters for safety: every MFC is zeroed and every valve closed before
anything else, the store included (after a crash gas may still be flowing); then the
store opens and records how that went, and polling starts. On any way out (stop request,
signal, error, a full store) a run in progress is closed, the pollers stop, every device
is made safe again (and retried up to `safety.safe_wait_s` if it does not confirm), the
remaining samples are committed and the store is closed.

Run by systemd as a Type=notify service, it says READY=1 once acquiring, feeds the
watchdog while acquisition makes progress (watchdog.py), and says STOPPING=1 with the
time its stop may take when it begins to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog

from acquisition import __version__
from acquisition.config.station import StationConfig, config_hash
from acquisition.daemon.notify import SystemdNotifier, watchdog_interval_s
from acquisition.daemon.watchdog import (
    StatusLine,
    Watchdog,
    acquisition_progress,
    watch_period_s,
)
from acquisition.mqtt.commands import CommandProcessor
from acquisition.mqtt.dut_intake import ReportIntake
from acquisition.mqtt.link import MqttLink
from acquisition.run.interlocks import Interlocks
from acquisition.run.scheduler import Scheduler, StationContext
from acquisition.run.state import RunRejectedError
from acquisition.safety.keeper import SafeStateKeeper
from acquisition.safety.zeroing import unconfirmed
from acquisition.samples.bus import SampleBus
from acquisition.samples.cache import SampleCache
from acquisition.samples.devices import StationDevices, build_devices
from acquisition.samples.poller import DevicePoller
from acquisition.samples.recorder import QUEUE_BATCHES, Recorder
from acquisition.site.site import Site
from acquisition.store.store import Store, StoreError

log = structlog.get_logger(__name__)
RUN_CLOSE_TIMEOUT_S = 20.0  # for an active run to make its devices safe and close
TASKS_STOP_PATIENCE_S = 5.0  # for the workers' tasks to end once cancelled
STORE_CLOSE_S = 10.0  # to commit the last samples, record the stop and close the store


def stop_budget_s(config: StationConfig) -> float:
    """The longest a stop can take (`_shutdown`): close the run, end the tasks, zero every
    device, retry the unconfirmed ones for `safety.safe_wait_s` (a retry begun just before
    the end takes one more zeroing timeout), then close the store."""
    zeroing_s = config.acquisition.zero_timeout_s
    return (RUN_CLOSE_TIMEOUT_S + TASKS_STOP_PATIENCE_S + zeroing_s
            + config.safety.safe_wait_s + zeroing_s + STORE_CLOSE_S)


async def cancel_and_wait(tasks: list[asyncio.Task[None]],
                          patience_s: float = TASKS_STOP_PATIENCE_S) -> None:
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


def _store_error_in(error: BaseException | None) -> StoreError | None:
    """The store failure that ended a task, also from inside a task group's exceptions."""
    if isinstance(error, StoreError):
        return error
    if isinstance(error, BaseExceptionGroup):
        group = error.subgroup(lambda inner: isinstance(inner, StoreError))
        while group is not None and isinstance(group, BaseExceptionGroup):
            group = group.exceptions[0]  # type: ignore[assignment]
        return group if isinstance(group, StoreError) else None
    return None


class Daemon:
    """One station's acquisition: owns the store, the devices and their tasks."""

    def __init__(self, config: StationConfig) -> None:
        self.config = config
        self.store = Store(config.storage.path, config.storage.max_size_mb)
        self.bus = SampleBus()
        self.devices: StationDevices = build_devices(config)
        self.recorder = Recorder(
            self.store, self.bus.subscribe("recorder", max_batches=QUEUE_BATCHES),
            config.acquisition.commit_interval_s
        )
        self.pollers: dict[str, DevicePoller] = {}
        self.site = Site(config, self.bus, self.store, self.event)
        self.cache = SampleCache(self.bus, history_channels={"flow"})
        self.keeper = SafeStateKeeper(config.acquisition.zero_timeout_s,
                                      config.safety.safe_retry_s, self.event)
        self.scheduler = Scheduler(StationContext(config, self.store, self.devices, self.cache,
                                                  self.site, self.recorder, self.event,
                                                  self.keeper))
        self.interlocks = Interlocks(config, self.cache, self.site, self.scheduler, self.event)
        self.commands = CommandProcessor(
            config, self.scheduler, self.event, self.health,
            ttl_s=config.mqtt.command_ttl_s if config.mqtt else 30.0,
            max_skew_s=config.mqtt.max_clock_skew_s if config.mqtt else 5.0)
        self.link = (MqttLink(config, self.store, self.bus, self.scheduler, self.commands,
                              self.health, ReportIntake(self.store, self.scheduler, self.event,
                                                        config.gas.species))
                     if config.mqtt else None)
        self.ready = asyncio.Event()  # set once devices are safe and acquisition runs
        self.systemd = SystemdNotifier.from_environment()  # None unless run by systemd
        self.store_failure: StoreError | None = None  # the store cannot record: stop
        self._store_failed = asyncio.Event()

    async def event(self, kind: str, detail: dict[str, Any], run_id: str | None = None) -> None:
        """Record an event; run events also go to MQTT through the outbox.

        A store that cannot record (full disk) stops the daemon, safely, instead of
        raising into whichever component had something to say."""
        if self.store_failure is not None:
            return
        t_ns = time.time_ns()
        try:
            await self.store.add_event(kind, detail, run_id, t_ns)
            if self.link is not None:
                await self.link.forward_event(kind, detail, run_id, t_ns)
        except StoreError as error:
            self._fail_store(error)

    def _fail_store(self, error: StoreError) -> None:
        if self.store_failure is None:
            self.store_failure = error
            log.error("the run store cannot record: stopping", error=str(error))
            self._store_failed.set()

    async def health(self) -> dict[str, Any]:
        """Every worker's counters, for the retained status and `crf ctl status`."""
        try:
            backlog: int | None = await self.store.outbox_backlog()
        except StoreError:
            backlog = None
        return {
            "safety": self.keeper.health() | {"interlock_trips": self.interlocks.trips},
            "lines": {name: line.health() for name, line in self.devices.lines.items()},
            "devices": {name: poller.health() for name, poller in self.pollers.items()},
            "streams": {name: reader.health() for name, reader in self.site.readers.items()},
            "surveys": self.site.release_points.health(),
            "recorder": self.recorder.health(),
            "dropped_samples": self.bus.health(),
            "store": {"outbox_backlog": backlog,
                      "failure": str(self.store_failure) if self.store_failure else None},
            "mqtt": self.link.health() if self.link else None,
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set or the store fails (`store_failure` says so); always
        leaves every device driven safe, and retried up to `safety.safe_wait_s`."""
        tasks: list[asyncio.Task[None]] = []
        try:
            # Safety before anything else, the store included: after a crash gas may
            # still be flowing.
            confirmed = await self._drive_safe("start-up")
            await self.store.open()
            await self.event("daemon.start", {
                "station": self.config.station, "software": __version__,
                "config_hash": config_hash(self.config),
            })
            await self._record_safe("start-up", confirmed)
            for run_id in await self.store.mark_interrupted_runs():
                log.warning("run interrupted by a crash", run_id=run_id)
                await self.event("run.state", {"state": "interrupted"}, run_id)
            self.commands.remember(await self.store.recent_command_ids())
            await self.site.record_positions()  # surveyed points are known from the start
            period = 1.0 / self.config.acquisition.sample_rate_hz
            for name, device in [*self.devices.mfcs.items(), *self.devices.sensors.items()]:
                self.pollers[name] = DevicePoller(device, self.bus, period, self.event)
            tasks += [asyncio.create_task(poller.run(), name=f"poll:{name}")
                      for name, poller in self.pollers.items()]
            tasks += [asyncio.create_task(reader.run(), name=f"read:{name}")
                      for name, reader in self.site.readers.items()]
            tasks.append(asyncio.create_task(self.site.run_watch(), name="site"))
            tasks.append(asyncio.create_task(self.interlocks.run(), name="interlocks"))
            tasks.append(asyncio.create_task(self.keeper.run(), name="safe-state"))
            tasks.append(asyncio.create_task(self.recorder.run(), name="recorder"))
            if self.link is not None:
                tasks.append(asyncio.create_task(self.link.run(), name="mqtt"))
            log.info("acquiring", station=self.config.station, mfcs=list(self.devices.mfcs),
                     sensors=list(self.devices.sensors), streams=list(self.site.readers),
                     store=str(self.config.storage.path))
            self.ready.set()
            if self.systemd is not None:
                tasks.append(asyncio.create_task(self._watchdog(self.systemd).run(),
                                                 name="watchdog"))
            await self._wait(stop, tasks)
        finally:
            await self._shutdown(tasks)

    async def _wait(self, stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
        """Return when asked to stop; re-raise if a task died (a bug), so we shut down.
        Only a capture file's reader may end by itself: the file was read to its end."""
        finite = {f"read:{name}" for name, reader in self.site.readers.items()
                  if reader.settings.transport == "file"}
        stopper = asyncio.create_task(stop.wait(), name="stop")
        store_failed = asyncio.create_task(self._store_failed.wait(), name="store failed")
        waiting = {stopper, store_failed, *tasks}
        try:
            while not (stopper.done() or store_failed.done()):
                done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in done - {stopper, store_failed}:
                    if (failure := _store_error_in(task.exception())) is not None:
                        self._fail_store(failure)
                        return
                    task.result()  # raises the task's exception: a bug
                    if task.get_name() not in finite:
                        raise RuntimeError(f"task {task.get_name()} ended unexpectedly")
                    log.info("capture file read to its end", reader=task.get_name())
        finally:
            stopper.cancel()
            store_failed.cancel()

    def _watchdog(self, systemd: SystemdNotifier) -> Watchdog:
        """Tell systemd the daemon is ready; the task that feeds its watchdog."""
        interval_s = watchdog_interval_s()
        status = StatusLine(self.scheduler, self.pollers, self.recorder, self.keeper)
        systemd.send("READY=1", f"STATUS={status()}")
        progress = acquisition_progress(self.pollers.values(), self.recorder,
                                        self.config.acquisition,
                                        watch_period_s(interval_s))
        return Watchdog(systemd, interval_s, progress, status)

    async def _drive_safe(self, why: str) -> dict[str, str | None]:
        """Zero every MFC and close every valve; the keeper retries what it cannot confirm."""
        for line in self.devices.lines.values():
            line.retry_now()
        results = await self.keeper.make_safe(self.devices.mfcs.values(),
                                              self.devices.valves.values())
        if not any(results.values()):
            log.info("all MFCs zeroed, valves closed", why=why, devices=sorted(results))
        return results

    async def _record_safe(self, why: str, results: dict[str, str | None]) -> None:
        if self.store.is_open:
            await self.event("safety.zeroed", {"why": why, "devices": sorted(results),
                                               "unconfirmed": unconfirmed(results)})

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        if self.systemd is not None:  # STOPPING first: the watchdog no longer applies
            self.systemd.send("STOPPING=1", "STATUS=stopping: making every device safe")
            self.systemd.send(f"EXTEND_TIMEOUT_USEC={int(stop_budget_s(self.config) * 1e6)}")
        if self.scheduler.running:  # close the run properly while the devices still poll
            with contextlib.suppress(RunRejectedError):  # unless it is ending already
                if self.store_failure is not None:
                    self.scheduler.fail(str(self.store_failure))
                else:
                    self.scheduler.abort("the daemon is stopping")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.scheduler.wait(), RUN_CLOSE_TIMEOUT_S)
        for worker in [*self.pollers.values(), *self.site.readers.values(),
                       *([self.link] if self.link else [])]:
            worker.stopping = True
        await cancel_and_wait(tasks)
        try:
            results = await self._drive_safe("shutdown")
            if self.keeper.unconfirmed():
                await self.keeper.wait_confirmed(self.config.safety.safe_wait_s)
                left = self.keeper.unconfirmed()
                results = {name: left.get(name) for name in results}
            await self._record_safe("shutdown", results)
        finally:
            try:
                if self.store.is_open and self.store_failure is None:
                    try:
                        await self.recorder.flush()
                    except StoreError as error:
                        self._fail_store(error)
                    await self.event("daemon.stop", {
                        "samples_recorded": self.recorder.committed,
                        "samples_dropped": self.recorder.subscription.dropped_samples,
                    })
            finally:
                self.devices.close()
                await self.store.close()
                if self.systemd is not None:
                    self.systemd.close()
                log.info("stopped", samples_recorded=self.recorder.committed)
