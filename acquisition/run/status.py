"""A readable view of where a run is: for the progress line, MQTT state and `status`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from acquisition.run.sequence import Plan, PlannedStep
from acquisition.run.state import FINAL

if TYPE_CHECKING:  # the scheduler imports this module
    from acquisition.run.scheduler import Progress, Scheduler


def run_view(scheduler: Scheduler, public: bool = False) -> dict[str, Any]:
    """Run id, state, step k of N, target, truth so far, ETA; `public` hides the rates of
    a blind sequence until the run has ended."""
    plan, progress = scheduler.plan, scheduler.progress
    hide = (public and plan is not None and plan.spec.blind
            and scheduler.state not in FINAL)
    unconfirmed = scheduler.ctx.keeper.unconfirmed()  # the alarm: gas may be flowing
    view: dict[str, Any] = {
        "run_id": scheduler.run_id, "state": scheduler.state.value, "reason": scheduler.reason,
        # which MFC would tell a blind run's range: then only how many are unconfirmed
        "unconfirmed": len(unconfirmed) if hide else unconfirmed}
    if plan is None:
        return view
    view |= {"sequence": plan.spec.name, "steps": len(plan.steps), "blind": plan.spec.blind,
             "completed_steps": len(scheduler.results)}
    if progress is not None:
        step, now = progress.step, time.monotonic()
        view |= {
            "step": step.index + 1, "point": step.point, "release_active": not step.blank,
            "target_kg_h": None if hide else step.target_kg_h,
            "target": None if hide else f"{step.target_value:g} {step.target_unit}",
            "mfc": None if hide else progress.assignment.mfc,
            "phase_elapsed_s": round(now - progress.phase_started_mono, 1),
            "hold_elapsed_s": (round(now - progress.hold_started_mono, 1)
                               if progress.hold_started_mono else None),
            "hold_s": step.timing.hold_s,
            "truth_so_far_kg_h": None if hide else progress.running_mean_kg_h,
            "eta_s": round(eta_s(plan, progress, now)),
        }
    return view


def eta_s(plan: Plan, progress: Progress, now: float) -> float:
    """Nominal time left: settle window plus hold for each step not yet done."""
    def nominal(step: PlannedStep) -> float:
        return step.timing.settle_window_s + step.timing.hold_s

    current = progress.step
    if progress.hold_started_mono is None:
        left = max(nominal(current) - (now - progress.phase_started_mono), 0.0)
    else:
        left = max(current.timing.hold_s - (now - progress.hold_started_mono), 0.0)
    return left + sum(nominal(step) for step in plan.steps[current.index + 1:])
