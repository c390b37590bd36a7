"""Steps through a calibration sequence: arm, settle, hold, record truth, and always end safe.

One run at a time. Commands (pause, resume, skip, abort, estop) only set a request and
wake the run task; the task acts on it at its next tick, so every transition happens in
one place and is written as an event. Every MFC and valve the run ever touched is driven
to its safe state when the run ends, whatever way it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from acquisition.config.station import StationConfig
from acquisition.daemon.devices import StationDevices
from acquisition.events import EventSink
from acquisition.run.ranging import Assignment, choose_mfc
from acquisition.run.records import run_row, step_row
from acquisition.run.sequence import (
    Plan,
    PlannedStep,
    SequenceSpec,
    StepSpec,
    conversion_for,
    plan_sequence,
)
from acquisition.run.state import FINAL, RELEASING, State, new_run_id
from acquisition.run.status import run_view
from acquisition.run.truth import Truth, compute_truth
from acquisition.safety.keeper import SafeStateKeeper
from acquisition.samples.cache import SampleCache
from acquisition.samples.recorder import Recorder
from acquisition.site.site import Site
from acquisition.store.store import Store, StoreError
from drivers.mfc import MfcDriver
from drivers.valve import ShutoffValve

log = structlog.get_logger(__name__)

TICK_S = 0.1
ENDING = {"abort", "fail"}  # requests that end the run
SETTLE_FLOOR_FS = 0.005  # tolerance never below 0.5 % of full scale (noise at low flow)


class Interrupt(Exception):
    """A command (pause, resume, skip, abort) delivered into the run task."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class RunRejectedError(Exception):
    """A command that does not fit the scheduler's state (e.g. start while running)."""


@dataclass
class Progress:
    step: PlannedStep
    assignment: Assignment
    phase_started_mono: float
    row: dict[str, Any] = field(default_factory=dict)  # the step's store row, as armed
    hold_started_mono: float | None = None
    running_mean_kg_h: float | None = None


@dataclass
class StationContext:
    """What the scheduler drives and where it records."""

    config: StationConfig
    store: Store
    devices: StationDevices
    cache: SampleCache
    site: Site
    recorder: Recorder
    emit: EventSink
    # Every zero and close goes through it; what it cannot confirm it keeps retrying.
    keeper: SafeStateKeeper


class Scheduler:
    def __init__(self, ctx: StationContext) -> None:
        self.ctx = ctx
        self.state = State.IDLE
        self.run_id: str | None = None
        self.plan: Plan | None = None
        self.progress: Progress | None = None
        self.results: dict[int, Truth | None] = {}
        self.final_status: State | None = None
        self.reason: str | None = None
        self._request: Interrupt | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._touched_mfcs: dict[str, MfcDriver] = {}
        self._touched_valves: dict[str, ShutoffValve] = {}
        self._release_ends_ns: int | None = None  # a manual release stops by itself then
        self._changed = asyncio.Condition()  # notified at every state transition

    # --- commands -----------------------------------------------------------------------

    async def start(self, plan: Plan, operator: str | None = None,
                    dut: str | None = None) -> str:
        if self.state not in (State.IDLE, *FINAL):
            raise RunRejectedError(f"a run is already {self.state} ({self.run_id})")
        if unconfirmed := self.ctx.keeper.unconfirmed():
            raise RunRejectedError("devices not confirmed safe, no release until they are: "
                                   + "; ".join(unconfirmed.values()))
        self.run_id, self.plan = new_run_id(), plan
        self.results, self.final_status, self.reason, self._request = {}, None, None, None
        self._release_ends_ns = None
        row = run_row(self.ctx.config, self.ctx.site, self.run_id, plan, operator, dut)
        self.ctx.recorder.run_started(self.run_id, row["t_start_ns"])  # no await in between
        await self.ctx.store.create_run(row)  # queued before any sample tagged with the run
        await self._set_state(State.IDLE, {"sequence": plan.spec.name, "steps": len(plan.steps),
                                           "seed": plan.seed, "operator": operator})
        self._task = asyncio.create_task(self._execute(), name=f"run:{self.run_id}")
        return self.run_id

    async def release(self, point: str, rate: float, unit: str, duration_s: float,
                      operator: str | None = None) -> str:
        """A manual release: one step at `rate` that ends by itself after `duration_s`.

        Checked like a sequence (point, unit, the point's and MFCs' limits) and against
        the station's longest allowed manual release."""
        limit = self.ctx.config.safety.max_manual_duration_s
        if not 0 < duration_s <= limit:
            raise RunRejectedError(f"duration {duration_s} s is outside 0..{limit} s "
                                   "(safety.max_manual_duration_s)")
        settle_window = min(3.0, duration_s / 4)
        spec = SequenceSpec(
            name="manual", description=f"manual release of {rate} {unit} at {point}",
            steps=[StepSpec(point=point, rate=rate, unit=unit, hold_s=duration_s,
                            settle_timeout_s=duration_s, settle_window_s=settle_window)])
        run_id = await self.start(plan_sequence(spec, self.ctx.config, Path("manual")),
                                  operator)
        self._release_ends_ns = time.monotonic_ns() + int(duration_s * 1e9)
        return run_id

    def _deadline_ns(self, phase_deadline_ns: int) -> int:
        ends = self._release_ends_ns
        return phase_deadline_ns if ends is None else min(phase_deadline_ns, ends)

    def pause(self, reason: str = "operator") -> None:
        self._ask("pause", reason, allowed=RELEASING)

    def resume(self) -> None:
        if self.state is not State.PAUSED:
            raise RunRejectedError(f"nothing to resume: the run is {self.state}")
        self._ask("resume", "operator", allowed={State.PAUSED})

    def skip(self, reason: str = "operator") -> None:
        self._ask("skip", reason, allowed={*RELEASING, State.PAUSED})

    def abort(self, reason: str = "operator") -> None:
        self._ask("abort", reason, allowed={*RELEASING, State.PAUSED, State.IDLE})

    def fail(self, reason: str) -> None:
        """End the run as failed (the station cannot go on, e.g. its store is full)."""
        self._ask("fail", reason, allowed={*RELEASING, State.PAUSED, State.IDLE})

    async def estop(self, reason: str = "emergency stop") -> None:
        """Make everything safe now, without waiting for the run task, then abort it."""
        results = await self.ctx.keeper.make_safe(self.ctx.devices.mfcs.values(),
                                                  self.ctx.devices.valves.values())
        await self.ctx.emit("safety.estop", {"reason": reason, "unconfirmed": {
            name: problem for name, problem in results.items() if problem}}, self.run_id)
        if self.running:
            self._ask("abort", reason, allowed={*RELEASING, State.PAUSED, State.IDLE})

    async def wait(self) -> State:
        if self._task is not None:
            await asyncio.shield(self._task)
        assert self.final_status is not None
        return self.final_status

    def snapshot(self, public: bool = False) -> dict[str, Any]:
        """Where the run is. `public` hides rates of a blind sequence until it ends."""
        return run_view(self, public)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _ask(self, kind: str, reason: str, allowed: set[State]) -> None:
        if not self.running or self.state not in allowed:
            raise RunRejectedError(f"cannot {kind}: the run is {self.state}"
                                   if self.running else f"cannot {kind}: no run is active")
        if self._request is None or kind in ENDING:  # ending outranks everything
            self._request = Interrupt(kind, reason)
        self._wake.set()

    # --- the run task ---------------------------------------------------------------------

    async def _execute(self) -> None:
        assert self.plan is not None
        status, reason = State.COMPLETED, None
        try:
            index = 0
            while index < len(self.plan.steps):
                step = self.plan.steps[index]
                try:
                    await self._run_step(step)
                    index += 1
                except Interrupt as interrupt:
                    if interrupt.kind in ENDING:
                        raise
                    if interrupt.kind == "skip":
                        await self._end_step(step, None, ["skipped"], interrupt.reason)
                        index += 1
                    elif interrupt.kind == "pause" and await self._paused(interrupt.reason):
                        await self._end_step(step, None, ["skipped"], "skipped while paused")
                        index += 1
        except Interrupt as interrupt:
            status = State.FAILED if interrupt.kind == "fail" else State.ABORTED
            reason = interrupt.reason
        except StoreError as error:  # a full or failing disk: its message says it all
            log.error("run failed", run_id=self.run_id, error=str(error))
            status, reason = State.FAILED, str(error)
        except Exception as error:  # a bug or a device failure: fail safe, say why
            log.exception("run failed", run_id=self.run_id)
            status, reason = State.FAILED, f"{type(error).__name__}: {error}"
        finally:
            await self._finish(status, reason)

    async def _finish(self, status: State, reason: str | None) -> None:
        self.state = State.ABORTING if status is not State.COMPLETED else self.state
        results = await self.ctx.keeper.make_safe(self._touched_mfcs.values(),
                                                  self._touched_valves.values())
        unconfirmed = {name: problem for name, problem in results.items() if problem}
        await self.ctx.emit("safety.zeroed", {"why": f"run {status}", "devices": sorted(results),
                                              "unconfirmed": unconfirmed}, self.run_id)
        assert self.run_id is not None
        t_end_ns = time.time_ns()
        self.ctx.recorder.run_ended(self.run_id, t_end_ns)  # no await in between
        try:
            await self.ctx.store.finish_run(self.run_id, status.value, reason, t_end_ns)
        except StoreError as error:  # the next start marks it interrupted
            log.error("could not record the end of the run", run_id=self.run_id,
                      error=str(error))
        self.final_status, self.reason = status, reason
        await self._set_state(status, {"reason": reason})
        self.progress = None
        self._touched_mfcs.clear()
        self._touched_valves.clear()

    async def _paused(self, reason: str) -> bool:
        """Hold everything safe until resume (False: redo the step) or skip (True).

        A device that cannot be confirmed safe now is the keeper's to retry, and the
        pause says so."""
        results = await self.ctx.keeper.make_safe(self._touched_mfcs.values(),
                                                  self._touched_valves.values())
        await self._set_state(State.PAUSED, {"reason": reason, "unconfirmed": {
            name: problem for name, problem in results.items() if problem}})
        while True:
            try:
                await self._tick(60.0)
            except Interrupt as interrupt:
                if interrupt.kind == "resume":
                    return False
                if interrupt.kind == "skip":
                    return True
                if interrupt.kind in ENDING:
                    raise

    async def _tick(self, timeout_s: float = TICK_S) -> None:
        """Wait a little; raise the pending command, if any."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)
        self._wake.clear()
        request, self._request = self._request, None
        if request is not None:
            raise request

    async def until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds; it is checked at every state transition."""
        async with self._changed:
            await self._changed.wait_for(condition)

    async def _set_state(self, state: State, detail: dict[str, Any] | None = None) -> None:
        self.state = state
        async with self._changed:
            self._changed.notify_all()
        payload = {"state": state.value, **(detail or {})}
        if self.progress is not None:
            payload |= {"step": self.progress.step.index, "point": self.progress.step.point}
        log.info("run state", run_id=self.run_id, **payload)
        await self.ctx.emit("run.state", payload, self.run_id)

    # --- one step ---------------------------------------------------------------------------

    async def _run_step(self, step: PlannedStep) -> None:
        config = self.ctx.config
        assignment = choose_mfc(config, step.point, step.target_kg_h)
        self.progress = Progress(step, assignment, time.monotonic())
        mfc = self.ctx.devices.mfcs[assignment.mfc]
        point = config.release_points[step.point]
        valve = self.ctx.devices.valves.get(point.valve) if point.valve else None
        if point.survey is not None and step.point not in self.ctx.site.position_ids:
            await self._wait_for_position(step.point)
        self.progress.row = step_row(self.run_id, step, assignment, self.ctx.site)
        await self.ctx.store.save_step(self.progress.row)
        await self._set_state(State.ARMING, {"mfc": mfc.name, "setpoint": assignment.setpoint,
                                             "unit": mfc.flow_unit})
        await self._arm(mfc, valve, assignment.setpoint, step.blank)
        await self._set_state(State.SETTLING)
        self.progress.phase_started_mono = time.monotonic()
        stable_at = await self._settle(mfc, assignment.setpoint, step)
        if stable_at is None:
            if step.timing.on_settle_timeout == "abort":
                raise Interrupt("abort", f"step {step.index} did not settle within "
                                         f"{step.timing.settle_timeout_s} s")
            await self._end_step(step, None, ["settle_timeout"], "did not settle")
            return
        await self._set_state(State.HOLDING)
        readings = await self._hold(mfc, step)
        truth = None
        flags: list[str] = []
        try:
            truth = compute_truth(readings, config.mfcs[mfc.name],
                                  conversion_for(config, mfc.name), config.gas, mfc.flow_unit)
        except ValueError as error:
            flags.append("too_few_readings")
            log.warning("no truth for step", step=step.index, reason=str(error))
        await self._end_step(step, truth, flags, None, stable_at)

    async def _wait_for_position(self, point: str) -> None:
        """A GNSS-surveyed point needs its survey before gas flows there (no gas yet)."""
        await self._set_state(State.ARMING, {"waiting_for": f"position of {point}"})
        deadline = time.monotonic() + self.ctx.config.safety.position_wait_s
        while point not in self.ctx.site.position_ids and time.monotonic() < deadline:
            await self._tick(0.5)

    async def _arm(self, mfc: MfcDriver, valve: ShutoffValve | None, setpoint: float,
                   blank: bool) -> None:
        """Only this MFC and valve may be open: zero and close the others the run used."""
        others = [m for m in self._touched_mfcs.values() if m is not mfc]
        other_valves = [v for v in self._touched_valves.values() if v is not valve]
        problems = await self.ctx.keeper.make_safe(others, other_valves)
        if any(problems.values()):
            raise RuntimeError(f"could not make the previous devices safe: {problems}")
        self._touched_mfcs[mfc.name] = mfc
        self.ctx.keeper.claim([mfc, *([valve] if valve else [])])
        if valve is not None:
            self._touched_valves[valve.name] = valve
            if blank:
                await valve.close()
            else:
                await valve.open()
        await mfc.set_flow(setpoint)

    async def _settle(self, mfc: MfcDriver, setpoint: float, step: PlannedStep) -> int | None:
        """Mono ns when the readback became stable, or None at the settle timeout."""
        timing = step.timing
        tolerance = max(setpoint * timing.settle_tolerance_pct / 100,
                        SETTLE_FLOOR_FS * mfc.full_scale)
        started = time.monotonic_ns()
        deadline = self._deadline_ns(started + int(timing.settle_timeout_s * 1e9))
        while time.monotonic_ns() < deadline:
            await self._tick()
            in_band_since = None
            for sample in self.ctx.cache.since(mfc.name, "flow", started):
                if sample.ok and abs(sample.value - setpoint) <= tolerance:  # type: ignore[operator]
                    in_band_since = in_band_since or sample.mono_ns
                else:
                    in_band_since = None
            window_ns = timing.settle_window_s * 1e9
            if in_band_since and time.monotonic_ns() - in_band_since >= window_ns:
                return in_band_since
        return None

    async def _hold(self, mfc: MfcDriver, step: PlannedStep) -> list[float]:
        """The good flow readbacks over the hold window."""
        assert self.progress is not None
        started = time.monotonic_ns()
        self.progress.hold_started_mono = started / 1e9
        conversion = conversion_for(self.ctx.config, mfc.name)
        readings: list[float] = []
        deadline = self._deadline_ns(started + int(step.timing.hold_s * 1e9))
        while time.monotonic_ns() < deadline:
            await self._tick()
            readings = [s.value for s in self.ctx.cache.since(mfc.name, "flow", started)
                        if s.ok and s.value is not None]
            if readings:
                self.progress.running_mean_kg_h = conversion.mass_rate(
                    sum(readings) / len(readings))
        return readings

    async def _end_step(self, step: PlannedStep, truth: Truth | None, flags: list[str],
                        note: str | None, stable_at_mono: int | None = None) -> None:
        assert self.progress is not None
        assignment = self.progress.assignment
        armed = self.progress.row or step_row(self.run_id, step, assignment, self.ctx.site)
        flags = [*assignment.qc_flags, *flags]
        if armed["position_id"] is None and not step.blank:
            flags.append("position_unknown")
        row = armed | {
            "t_end_ns": time.time_ns(),
            "t_stable_ns": (time.time_ns() - (time.monotonic_ns() - stable_at_mono)
                            if stable_at_mono else None),
            "stable": int(stable_at_mono is not None),
            "qc_flags": ",".join(flags) or None,
        }
        if truth is not None:
            row |= {"truth_mean": truth.mean_kg_h, "truth_std": truth.std_kg_h,
                    "truth_n": truth.n, "truth_unit": "kg/h", "u_standard": truth.u_kg_h,
                    "u_expanded": truth.expanded_kg_h,
                    "budget_json": json.dumps(truth.to_dict())}
        await self.ctx.store.save_step(row)
        self.results[step.index] = truth
        await self.ctx.emit("step.result", {
            "step": step.index, "point": step.point, "target_kg_h": step.target_kg_h,
            "truth_kg_h": truth.mean_kg_h if truth else None,
            "u_expanded_kg_h": truth.expanded_kg_h if truth else None,
            "qc_flags": flags, "note": note}, self.run_id)
