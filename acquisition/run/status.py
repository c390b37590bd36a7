"""Where a run is, as one immutable snapshot that the scheduler replaces and pushes.

Every reader (MQTT state and events, interlocks, commands, the progress line, tests)
gets a `RunStatus`; none reaches into the scheduler. `redact` is the one place that
decides what a blind run hides from public topics until it has ended.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from acquisition.run.state import FINAL, State

# What would reveal a blind run's rate: targets, truths, and which MFC (its range) is used.
BLIND_KEYS = frozenset({"setpoint", "target", "target_kg_h", "truth_kg_h", "u_expanded_kg_h",
                        "truth_so_far_kg_h", "mfc", "unit"})


def redact(detail: dict[str, Any]) -> dict[str, Any]:
    """`detail` as a blind run shows it in public: without rates, truths or the MFC, and
    with only how many devices are unconfirmed (their names would tell the MFC)."""
    shown = {key: value for key, value in detail.items() if key not in BLIND_KEYS}
    if isinstance(shown.get("unconfirmed"), dict):
        shown["unconfirmed"] = len(shown["unconfirmed"])
    return shown


@dataclass(frozen=True)
class StepResult:
    """A finished step as the summary and the unblinding show it."""

    step: int  # 1-based
    point: str
    target: str  # as the sequence gave it, e.g. "100 g/h"
    truth_kg_h: float | None  # None: no truth (skipped, unsettled, too few readings)
    u_expanded_kg_h: float | None


@dataclass(frozen=True)
class RunStatus:
    """One run's state at one moment; `view` turns it into the JSON everyone reads."""

    run_id: str | None = None
    state: State = State.IDLE
    reason: str | None = None
    sequence: str | None = None
    steps: int = 0
    blind: bool = False
    results: tuple[StepResult, ...] = ()
    # The step in progress (None between runs and once a run has ended).
    step: int | None = None  # 1-based
    point: str | None = None
    release_active: bool = False
    target_kg_h: float | None = None
    target: str | None = None
    mfc: str | None = None
    hold_s: float | None = None
    phase_started_mono: float | None = None
    hold_started_mono: float | None = None
    truth_so_far_kg_h: float | None = None
    step_nominal_s: float = 0.0  # settle window + hold of this step
    after_step_s: float = 0.0  # the same, summed over the steps after it

    @property
    def ended(self) -> bool:
        return self.state in FINAL

    @property
    def hidden(self) -> bool:
        """A blind run hides its rates until it has ended."""
        return self.blind and not self.ended

    def eta_s(self, now: float) -> float:
        """Nominal time left: this step's remainder, then settle window + hold of each
        step after it."""
        if self.hold_started_mono is not None and self.hold_s is not None:
            left = self.hold_s - (now - self.hold_started_mono)
        elif self.phase_started_mono is not None:
            left = self.step_nominal_s - (now - self.phase_started_mono)
        else:
            left = 0.0
        return max(left, 0.0) + self.after_step_s

    def view(self, now: float, unconfirmed: dict[str, str], public: bool = False
             ) -> dict[str, Any]:
        """Run id, state, step k of N, target, truth so far, ETA, and the devices not
        confirmed safe; `public` redacts a blind run's rates until it has ended."""
        view: dict[str, Any] = {"run_id": self.run_id, "state": self.state.value,
                                "reason": self.reason, "unconfirmed": unconfirmed}
        if self.sequence is not None:
            view |= {"sequence": self.sequence, "steps": self.steps, "blind": self.blind,
                     "completed_steps": len(self.results)}
        if self.step is not None:
            view |= {
                "step": self.step, "point": self.point, "release_active": self.release_active,
                "target_kg_h": self.target_kg_h, "target": self.target, "mfc": self.mfc,
                "phase_elapsed_s": (round(now - self.phase_started_mono, 1)
                                    if self.phase_started_mono is not None else None),
                "hold_elapsed_s": (round(now - self.hold_started_mono, 1)
                                   if self.hold_started_mono is not None else None),
                "hold_s": self.hold_s, "truth_so_far_kg_h": self.truth_so_far_kg_h,
                "eta_s": round(self.eta_s(now)),
            }
        return redact(view) if public and self.hidden else view

    def results_dict(self) -> list[dict[str, Any]]:
        return [asdict(result) for result in self.results]


def progress_line(view: dict[str, Any]) -> str:
    """One line that says where the run is, for a terminal or a log."""
    alarm = (f"  ALARM not confirmed safe: {', '.join(view['unconfirmed'])}"
             if view.get("unconfirmed") else "")
    if "step" not in view:
        return f"run {view.get('run_id')} {view['state']}{alarm}"
    hold = (f" {view['hold_elapsed_s']:.0f}/{view['hold_s']:.0f} s"
            if view.get("hold_elapsed_s") is not None else "")
    truth = (f"  truth {view['truth_so_far_kg_h']:.5g} kg/h"
             if view.get("truth_so_far_kg_h") is not None else "")
    target = view.get("target") or "(blind)"
    minutes, seconds = divmod(int(view.get("eta_s") or 0), 60)
    mfc = f"[{view['mfc']}]  " if view.get("mfc") else ""
    return (f"step {view['step']}/{view['steps']}  {view['point']}  {target}  "
            f"{mfc}{view['state']}{hold}{truth}  ETA {minutes:02d}:{seconds:02d}{alarm}")
