"""Steps through a calibration sequence: arm, settle, hold, record truth, and always end safe.

One run at a time. `start` and `release` create the run and its task; pause, resume,
skip and abort only set a request and wake the task, which acts on it at its next tick,
so every transition of a running run happens in one place, is checked against the state
machine's table and is written as an event. `estop` makes every device safe at once,
then asks the task to abort.
Where the run is, is one immutable `RunStatus`, replaced at each change and pushed to
subscribers. Every MFC and valve the run ever touched is driven to its safe state when
the run ends, whatever way it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from acquisition.config.station import StationConfig
from acquisition.events import EventSink
from acquisition.run import decisions
from acquisition.run.decisions import Response, Settling
from acquisition.run.ranging import Assignment, choose_mfc
from acquisition.run.records import ended_step_row, run_row, step_row
from acquisition.run.sequence import Plan, PlannedStep, SequenceSpec, StepSpec, plan_sequence
from acquisition.run.state import (
    FINAL,
    RELEASING,
    RunRejectedError,
    State,
    check_transition,
    new_run_id,
)
from acquisition.run.status import RunStatus, StepResult
from acquisition.run.truth import Truth, compute_truth
from acquisition.safety.keeper import SafeStateKeeper
from acquisition.safety.zeroing import unconfirmed
from acquisition.samples.cache import SampleCache
from acquisition.samples.devices import StationDevices
from acquisition.samples.recorder import Recorder
from acquisition.site.site import Site
from acquisition.store.store import Store, StoreError
from drivers.mfc import MfcDriver
from drivers.valve import ShutoffValve

log = structlog.get_logger(__name__)

TICK_S = 0.1


class Interrupt(Exception):
    """A request (pause, resume, skip, abort, fail) delivered into the run task."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass
class Progress:
    """The step being run, as only the run task needs it."""

    step: PlannedStep
    assignment: Assignment
    row: dict[str, Any] = field(default_factory=dict)  # the step's store row, as armed


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


Subscriber = Callable[[RunStatus], None]


class Scheduler:
    def __init__(self, ctx: StationContext) -> None:
        self.ctx = ctx
        self._status = RunStatus()
        self._subscribers: list[Subscriber] = []
        self._changed = asyncio.Condition()
        self._plan: Plan | None = None
        self._progress: Progress | None = None
        self._request: Interrupt | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._touched_mfcs: dict[str, MfcDriver] = {}
        self._touched_valves: dict[str, ShutoffValve] = {}
        self._release_ends_ns: int | None = None  # a manual release stops by itself then

    # --- the published status ---------------------------------------------------------------

    @property
    def status(self) -> RunStatus:
        return self._status

    def subscribe(self, subscriber: Subscriber) -> None:
        """Call `subscriber` with every new status (it must not block)."""
        self._subscribers.append(subscriber)

    async def until(self, condition: Callable[[RunStatus], bool]) -> RunStatus:
        """The status once `condition` holds for it: checked now and at every change."""
        async with self._changed:
            await self._changed.wait_for(lambda: condition(self._status))
        return self._status

    def snapshot(self, public: bool = False) -> dict[str, Any]:
        """The status as JSON, with the devices not confirmed safe; `public` redacts a
        blind run's rates until it has ended."""
        return self._status.view(time.monotonic(), self.ctx.keeper.unconfirmed(), public)

    async def _publish(self, **changes: Any) -> None:
        self._status = dataclasses.replace(self._status, **changes)
        for subscriber in self._subscribers:
            subscriber(self._status)
        async with self._changed:
            self._changed.notify_all()

    async def _transition(self, state: State, detail: dict[str, Any] | None = None,
                          **changes: Any) -> None:
        """Move to `state` (checked against the table), publish it and record the event."""
        check_transition(self._status.state, state)
        await self._publish(state=state, **changes)
        payload = {"state": state.value, **(detail or {})}
        if self._progress is not None:
            payload |= {"step": self._progress.step.index, "point": self._progress.step.point}
        log.info("run state", run_id=self._status.run_id, **payload)
        await self.ctx.emit("run.state", payload, self._status.run_id)

    # --- commands -----------------------------------------------------------------------

    async def start(self, plan: Plan, operator: str | None = None,
                    dut: str | None = None) -> str:
        if self._status.state not in (State.IDLE, *FINAL):
            raise RunRejectedError(f"a run is already {self._status.state} "
                                   f"({self._status.run_id})")
        if problems := self.ctx.keeper.unconfirmed():
            raise RunRejectedError("devices not confirmed safe, no release until they are: "
                                   + "; ".join(problems.values()))
        run_id, self._plan, self._request = new_run_id(), plan, None
        self._release_ends_ns = None
        row = run_row(self.ctx.config, self.ctx.site, run_id, plan, operator, dut)
        self.ctx.recorder.run_started(run_id, row["t_start_ns"])  # no await in between
        await self.ctx.store.create_run(row)  # queued before any sample tagged with the run
        await self._transition(
            State.IDLE, {"sequence": plan.spec.name, "steps": len(plan.steps),
                         "seed": plan.seed, "operator": operator},
            run_id=run_id, reason=None, sequence=plan.spec.name, steps=len(plan.steps),
            blind=plan.spec.blind, results=())
        self._task = asyncio.create_task(self._execute(), name=f"run:{run_id}")
        return run_id

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

    def pause(self, reason: str = "operator") -> None:
        self._ask("pause", reason, allowed=RELEASING)

    def resume(self) -> None:
        if self._status.state is not State.PAUSED:
            raise RunRejectedError(f"nothing to resume: the run is {self._status.state}")
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
        await self.ctx.emit("safety.estop", {"reason": reason,
                                             "unconfirmed": unconfirmed(results)},
                            self._status.run_id)
        if self.running:
            self._ask("abort", reason, allowed={*RELEASING, State.PAUSED, State.IDLE})

    async def wait(self) -> State:
        """The final state of the current run, once it has ended."""
        if self._task is not None:
            await asyncio.shield(self._task)
        return self._status.state

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _ask(self, kind: str, reason: str, allowed: set[State]) -> None:
        state = self._status.state
        if not self.running or state not in allowed:
            raise RunRejectedError(f"cannot {kind}: the run is {state}"
                                   if self.running else f"cannot {kind}: no run is active")
        if self._request is None or kind in decisions.ENDING:  # ending outranks everything
            self._request = Interrupt(kind, reason)
        self._wake.set()

    # --- the run task ---------------------------------------------------------------------

    async def _execute(self) -> None:
        assert self._plan is not None
        status, reason = State.COMPLETED, None
        try:
            index = 0
            while index < len(self._plan.steps):
                step = self._plan.steps[index]
                try:
                    await self._run_step(step)
                    index += 1
                except Interrupt as interrupt:
                    response, note = decisions.respond(interrupt.kind, paused=False), None
                    if response is Response.END_RUN:
                        raise
                    if response is Response.PAUSE:
                        response, note = await self._paused(interrupt.reason), "while paused"
                    if response is Response.SKIP_STEP:
                        await self._end_step(step, None, ["skipped"], note or interrupt.reason)
                        index += 1
        except Interrupt as interrupt:
            status, reason = decisions.ENDING[interrupt.kind], interrupt.reason
        except StoreError as error:  # a full or failing disk: its message says it all
            log.error("run failed", run_id=self._status.run_id, error=str(error))
            status, reason = State.FAILED, str(error)
        except Exception as error:  # a bug or a device failure: fail safe, say why
            log.exception("run failed", run_id=self._status.run_id)
            status, reason = State.FAILED, f"{type(error).__name__}: {error}"
        finally:
            await self._finish(status, reason)

    async def _finish(self, status: State, reason: str | None) -> None:
        if status is not State.COMPLETED:
            await self._transition(State.ABORTING, {"reason": reason})
        results = await self.ctx.keeper.make_safe(self._touched_mfcs.values(),
                                                  self._touched_valves.values())
        run_id = self._status.run_id
        assert run_id is not None
        await self.ctx.emit("safety.zeroed", {"why": f"run {status}", "devices": sorted(results),
                                              "unconfirmed": unconfirmed(results)}, run_id)
        t_end_ns = time.time_ns()
        self.ctx.recorder.run_ended(run_id, t_end_ns)  # no await in between
        try:
            await self.ctx.store.finish_run(run_id, status.value, reason, t_end_ns)
        except StoreError as error:  # the next start marks it interrupted
            log.error("could not record the end of the run", run_id=run_id, error=str(error))
        self._progress = None
        await self._transition(status, {"reason": reason}, reason=reason, **_NO_STEP)
        self._touched_mfcs.clear()
        self._touched_valves.clear()

    async def _paused(self, reason: str) -> Response:
        """Hold everything safe until resume (REDO_STEP) or skip (SKIP_STEP).

        A device that cannot be confirmed safe now is the keeper's to retry, and the
        pause says so."""
        results = await self.ctx.keeper.make_safe(self._touched_mfcs.values(),
                                                  self._touched_valves.values())
        await self._transition(State.PAUSED, {"reason": reason,
                                              "unconfirmed": unconfirmed(results)},
                               hold_started_mono=None, truth_so_far_kg_h=None)
        while True:
            try:
                await self._tick(60.0)
            except Interrupt as interrupt:
                response = decisions.respond(interrupt.kind, paused=True)
                if response is Response.END_RUN:
                    raise
                if response is not Response.IGNORE:
                    return response

    async def _tick(self, timeout_s: float = TICK_S) -> None:
        """Wait a little; raise the pending request, if any."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)
        self._wake.clear()
        request, self._request = self._request, None
        if request is not None:
            raise request

    # --- one step ---------------------------------------------------------------------------

    async def _run_step(self, step: PlannedStep) -> None:
        config = self.ctx.config
        assignment = choose_mfc(config, step.point, step.target_kg_h)
        self._progress = Progress(step, assignment)
        mfc = self.ctx.devices.mfcs[assignment.mfc]
        point = config.release_points[step.point]
        valve = self.ctx.devices.valves.get(point.valve) if point.valve else None
        stepping = self._step_status(step, assignment)  # published with the step's ARMING
        if point.survey is not None and step.point not in self.ctx.site.position_ids:
            await self._wait_for_position(step.point, stepping)
        self._progress.row = step_row(self._status.run_id, step, assignment, self.ctx.site)
        await self.ctx.store.save_step(self._progress.row)
        await self._transition(State.ARMING, {"mfc": mfc.name, "setpoint": assignment.setpoint,
                                              "unit": mfc.flow_unit}, **stepping)
        await self._arm(mfc, valve, assignment.setpoint, step.blank)
        await self._transition(State.SETTLING, phase_started_mono=time.monotonic())
        stable_at = await self._settle(mfc, assignment.setpoint, step)
        if stable_at is None:
            if step.timing.on_settle_timeout == "abort":
                raise Interrupt("abort", f"step {step.index} did not settle within "
                                         f"{step.timing.settle_timeout_s} s")
            await self._end_step(step, None, ["settle_timeout"], "did not settle")
            return
        readings = await self._hold(mfc, step)
        truth = None
        flags: list[str] = []
        try:
            truth = compute_truth(readings, config.mfcs[mfc.name], config.conversion(mfc.name),
                                  config.gas, mfc.flow_unit)
        except ValueError as error:
            flags.append("too_few_readings")
            log.warning("no truth for step", step=step.index, reason=str(error))
        await self._end_step(step, truth, flags, None, stable_at)

    def _step_status(self, step: PlannedStep, assignment: Assignment) -> dict[str, Any]:
        """The status fields of a step about to be armed."""
        assert self._plan is not None
        def nominal(planned: PlannedStep) -> float:
            return planned.timing.settle_window_s + planned.timing.hold_s

        return {"step": step.index + 1, "point": step.point, "release_active": not step.blank,
                "target_kg_h": step.target_kg_h,
                "target": f"{step.target_value:g} {step.target_unit}", "mfc": assignment.mfc,
                "hold_s": step.timing.hold_s, "phase_started_mono": time.monotonic(),
                "hold_started_mono": None, "truth_so_far_kg_h": None,
                "step_nominal_s": nominal(step),
                "after_step_s": sum(nominal(later)
                                    for later in self._plan.steps[step.index + 1:])}

    async def _wait_for_position(self, point: str, stepping: dict[str, Any]) -> None:
        """A GNSS-surveyed point needs its survey before gas flows there (no gas yet)."""
        await self._transition(State.ARMING, {"waiting_for": f"position of {point}"},
                               **stepping)
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
        tolerance = decisions.settle_tolerance(setpoint, timing.settle_tolerance_pct,
                                               mfc.full_scale)
        started = time.monotonic_ns()
        deadline = decisions.phase_deadline(started, timing.settle_timeout_s,
                                            self._release_ends_ns)
        while True:
            await self._tick()
            since = decisions.in_band_since(self.ctx.cache.since(mfc.name, "flow", started),
                                            setpoint, tolerance)
            verdict = decisions.settling(since, time.monotonic_ns(),
                                         int(timing.settle_window_s * 1e9), deadline)
            if verdict is Settling.STABLE:
                return since
            if verdict is Settling.TIMED_OUT:
                return None

    async def _hold(self, mfc: MfcDriver, step: PlannedStep) -> list[float]:
        """The good flow readbacks over the hold window, the running mean published."""
        started = time.monotonic_ns()
        await self._transition(State.HOLDING, hold_started_mono=started / 1e9)
        conversion = self.ctx.config.conversion(mfc.name)
        deadline = decisions.phase_deadline(started, step.timing.hold_s,
                                            self._release_ends_ns)
        readings: list[float] = []
        while time.monotonic_ns() < deadline:
            await self._tick()
            readings = decisions.good_values(self.ctx.cache.since(mfc.name, "flow", started))
            if readings:
                await self._publish(
                    truth_so_far_kg_h=conversion.mass_rate(sum(readings) / len(readings)))
        return readings

    async def _end_step(self, step: PlannedStep, truth: Truth | None, flags: list[str],
                        note: str | None, stable_at_mono: int | None = None) -> None:
        assert self._progress is not None
        assignment = self._progress.assignment
        armed = self._progress.row or step_row(self._status.run_id, step, assignment,
                                               self.ctx.site)
        flags = [*assignment.qc_flags, *flags]
        if armed["position_id"] is None and not step.blank:
            flags.append("position_unknown")
        await self.ctx.store.save_step(ended_step_row(armed, flags, truth, stable_at_mono))
        result = StepResult(step.index + 1, step.point,
                            f"{step.target_value:g} {step.target_unit}",
                            truth.mean_kg_h if truth else None,
                            truth.expanded_kg_h if truth else None)
        await self._publish(results=(*self._status.results, result))
        await self.ctx.emit("step.result", {
            "step": step.index, "point": step.point, "target_kg_h": step.target_kg_h,
            "truth_kg_h": result.truth_kg_h, "u_expanded_kg_h": result.u_expanded_kg_h,
            "qc_flags": flags, "note": note}, self._status.run_id)


_NO_STEP: dict[str, Any] = {  # the status fields of a step, once no step is in progress
    "step": None, "point": None, "release_active": False, "target_kg_h": None,
    "target": None, "mfc": None, "hold_s": None, "phase_started_mono": None,
    "hold_started_mono": None, "truth_so_far_kg_h": None, "step_nominal_s": 0.0,
    "after_step_s": 0.0}
