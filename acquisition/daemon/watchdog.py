"""systemd's watchdog, fed only while acquisition makes progress, and the STATUS line.

The feed comes from a task of the daemon's own event loop, so a loop that blocks stops it.
With polled Modbus devices it also stops when acquisition stands still: no line answered
a single transaction (every cable pulled, an adapter wedged, every device silent), or the
recorder committed nothing (the store hangs). systemd then kills the daemon and starts it
again, and the start-up makes every device safe. One dead line among live ones is not a
reason: the status shows its devices as faulty, the interlocks act on them and the
safe-state keeper retries them, while a restart would only abort a run on the live lines.
A daemon between runs still polls and records, so it is fed all the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import structlog

from acquisition.daemon.notify import SystemdNotifier

if TYPE_CHECKING:
    from acquisition.config.tables import AcquisitionConfig
    from acquisition.run.scheduler import Scheduler
    from acquisition.safety.keeper import SafeStateKeeper
    from acquisition.samples.poller import DevicePoller
    from acquisition.samples.recorder import Recorder

log = structlog.get_logger(__name__)

STATUS_INTERVAL_S = 10.0  # how often STATUS is refreshed when systemd set no watchdog


class ProgressWatch:
    """Counters that must keep moving; says which stood still for longer than allowed."""

    def __init__(self, counters: Mapping[str, Callable[[], int]], allowance_s: float) -> None:
        self.counters = dict(counters)
        self.allowance_s = allowance_s
        now = time.monotonic()
        self._last = {name: (read(), now) for name, read in self.counters.items()}

    def stalled(self) -> dict[str, float]:
        """Each counter unchanged for longer than the allowance, with for how long (s)."""
        now = time.monotonic()
        stalled = {}
        for name, read in self.counters.items():
            value = read()
            seen, since = self._last[name]
            if value != seen:
                self._last[name] = (value, now)
            elif now - since > self.allowance_s:
                stalled[name] = now - since
        return stalled


def acquisition_progress(pollers: Iterable[DevicePoller], recorder: Recorder,
                         settings: AcquisitionConfig, check_every_s: float) -> ProgressWatch:
    """Some Modbus line answering and the recorder committing, checked every
    `check_every_s`: each must move within one check plus its own period (a poll, a
    batch). Without polled devices nothing is required: the feed itself proves the loop
    runs."""
    lines = {poller.device.line for poller in pollers}
    counters: dict[str, Callable[[], int]] = {}
    if lines:
        counters["no Modbus line answered"] = lambda: sum(
            line.transactions - line.failures for line in lines)
        counters["no samples committed"] = lambda: recorder.committed
    slowest_s = max(1 / settings.sample_rate_hz, settings.commit_interval_s)
    return ProgressWatch(counters, check_every_s + slowest_s)


class StatusLine:
    """The line `systemctl status` shows: the run, the devices answering, the samples
    recorded per second since the last line, and every device not confirmed safe."""

    def __init__(self, scheduler: Scheduler, pollers: Mapping[str, DevicePoller],
                 recorder: Recorder, keeper: SafeStateKeeper) -> None:
        self.scheduler = scheduler
        self.pollers = pollers
        self.recorder = recorder
        self.keeper = keeper
        self._last = (time.monotonic(), recorder.committed)

    def __call__(self) -> str:
        now, committed = time.monotonic(), self.recorder.committed
        then, before = self._last
        self._last = (now, committed)
        rate = (committed - before) / (now - then) if now > then else 0.0
        run = self.scheduler.status
        step = f" step {run.step}/{run.steps}" if run.step else ""
        answering = sum(poller.health()["fault"] is None for poller in self.pollers.values())
        parts = [f"run {run.state}{step}" if run.run_id else "no run",
                 f"{answering}/{len(self.pollers)} devices answering",
                 f"{rate:.1f} samples/s recorded"]
        if unsafe := self.keeper.unconfirmed():
            parts.append(f"NOT CONFIRMED SAFE: {', '.join(sorted(unsafe))}")
        return "; ".join(parts)


def watch_period_s(interval_s: float | None) -> float:
    """How often the watchdog task looks at progress: half of WatchdogSec, or only to
    refresh the STATUS when systemd set no watchdog."""
    return interval_s or STATUS_INTERVAL_S


class Watchdog:
    """Every `interval_s` (half of WatchdogSec): WATCHDOG=1 with a fresh STATUS while
    acquisition progresses, a STALLED status and no feed while it does not. Without a
    watchdog (`interval_s` None) only the STATUS is kept current."""

    def __init__(self, notifier: SystemdNotifier, interval_s: float | None,
                 progress: ProgressWatch, status: Callable[[], str]) -> None:
        self.notifier = notifier
        self.interval_s = interval_s
        self.progress = progress
        self.status = status

    async def run(self) -> None:
        was_stalled = False
        while True:
            await asyncio.sleep(watch_period_s(self.interval_s))
            stalled = self.progress.stalled()
            if stalled:
                why = "; ".join(f"{what} for {seconds:.1f} s" for what, seconds in stalled.items())
                if not was_stalled:
                    log.error("acquisition makes no progress: the watchdog is not fed", why=why)
                self.notifier.send(f"STATUS=STALLED ({why}); {self.status()}")
            else:
                if was_stalled:
                    log.warning("acquisition progresses again: the watchdog is fed")
                feed = ["WATCHDOG=1"] if self.interval_s else []
                self.notifier.send(*feed, f"STATUS={self.status()}")
            was_stalled = bool(stalled)
