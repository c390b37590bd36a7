"""Interlocks: conditions under which gas must stop, checked while gas is commanded.

Each trips to the action configured for it (pause or abort) with a reason that is
written to the store and the log. A sensor that stops reporting trips too: an interlock
that cannot see is not an interlock. A run paused by an interlock resumes by itself once
that interlock has been clear for `safety.resume_after_s` (a gust, a brief fix loss),
unless that is 0; an operator can always resume or abort it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from acquisition.config.station import StationConfig
from acquisition.config.tables import ThresholdInterlock
from acquisition.events import EventSink
from acquisition.run.scheduler import Scheduler
from acquisition.run.state import RunRejectedError, State
from acquisition.samples.cache import SampleCache
from acquisition.site.site import Site
from drivers.gnss import at_least

log = structlog.get_logger(__name__)
GAS_COMMANDED = {State.SETTLING, State.HOLDING}



class Interlocks:
    def __init__(self, config: StationConfig, cache: SampleCache, site: Site,
                 scheduler: Scheduler, emit: EventSink) -> None:
        self.config = config
        self.cache = cache
        self.site = site
        self.scheduler = scheduler
        self.emit = emit
        self.trips = 0
        self.paused_by: str | None = None  # the interlock whose pause may auto-resume
        self._clear_since: float | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.safety.check_period_s)
            state = self.scheduler.status.state
            if state in GAS_COMMANDED:
                await self.check()
            elif state is State.PAUSED and self.paused_by:
                await self._maybe_resume()
            else:
                self.paused_by = None

    async def check(self) -> None:
        """Trip the first interlock that is violated, if any."""
        for name, action, reason in self._violations():
            await self._trip(name, action, reason)
            return

    async def _maybe_resume(self) -> None:
        if any(name == self.paused_by for name, *_ in self._violations()):
            self._clear_since = None
            return
        now = time.monotonic()
        self._clear_since = self._clear_since or now
        hold_off = self.config.safety.resume_after_s
        if hold_off > 0 and now - self._clear_since >= hold_off:
            name, self.paused_by, self._clear_since = self.paused_by, None, None
            await self.emit("interlock.cleared", {"interlock": name, "clear_for_s": hold_off},
                            self.scheduler.status.run_id)
            with contextlib.suppress(RunRejectedError):
                self.scheduler.resume()

    def _violations(self) -> list[tuple[str, str, str]]:
        status = self.scheduler.status
        if status.mfc is None or status.point is None or status.phase_started_mono is None:
            return []  # no step in progress
        safety = self.config.safety
        found = []
        mfc = status.mfc
        age = self.cache.good_age_s(mfc, "flow")
        phase_age = time.monotonic() - status.phase_started_mono
        if (age is None and phase_age > safety.comm_loss.after_s) or (
                age is not None and age > safety.comm_loss.after_s):
            found.append(("comm_loss", safety.comm_loss.action,
                          f"no good reading from MFC {mfc} for more than "
                          f"{safety.comm_loss.after_s} s"))
        for name, interlock in (("supply_pressure", safety.supply_pressure),
                                ("wind", safety.wind)):
            if interlock is not None and (reason := self._out_of_range(interlock)):
                found.append((name, interlock.action, reason))
        if safety.gnss_fix_action != "ignore" and (reason := self._fix_lost(status.point)):
            found.append(("gnss_fix", safety.gnss_fix_action, reason))
        return found

    def _out_of_range(self, interlock: ThresholdInterlock) -> str | None:
        where = f"{interlock.device}.{interlock.channel}"
        age = self.cache.good_age_s(interlock.device, interlock.channel)
        if age is None or age > interlock.stale_after_s:
            return f"{where}: no good reading for more than {interlock.stale_after_s} s"
        value = self.cache.good_value(interlock.device, interlock.channel)
        assert value is not None
        if interlock.min is not None and value < interlock.min:
            return f"{where} = {value:.4g}, below the floor of {interlock.min}"
        if interlock.max is not None and value > interlock.max:
            return f"{where} = {value:.4g}, above the ceiling of {interlock.max}"
        return None

    def _fix_lost(self, point: str) -> str | None:
        survey = self.config.release_points[point].survey
        if survey is None:
            return None
        reader = self.site.gnss[survey.receiver]
        fix = getattr(reader.interpreter, "last_fix", None)
        timeout = self.config.gnss[survey.receiver].fix_timeout_s
        if fix is None or (time.time_ns() - fix.t_ns) / 1e9 > timeout:
            return f"GNSS {survey.receiver} at point {point}: no fix for more than {timeout} s"
        if not at_least(fix.quality, survey.min_quality):
            return (f"GNSS {survey.receiver} at point {point}: fix quality "
                    f"{fix.quality_name}, below {survey.min_quality}")
        return None

    async def _trip(self, name: str, action: str, reason: str) -> None:
        self.trips += 1
        log.warning("interlock tripped", interlock=name, action=action, reason=reason)
        await self.emit("interlock", {"interlock": name, "action": action, "reason": reason},
                        self.scheduler.status.run_id)
        try:
            if action == "pause":
                self.scheduler.pause(f"interlock {name}: {reason}")
                self.paused_by, self._clear_since = name, None
            else:
                self.scheduler.abort(f"interlock {name}: {reason}")
        except RunRejectedError:
            pass  # the run moved on (ended or paused) since the check
