"""The run's decisions as pure functions of readbacks and times: no daemon, no clock of
their own (the caller passes `now`), so each is tested in milliseconds.

- settling: the readback must stay within a tolerance of the setpoint for a settle window
  before the settle timeout;
- holding: the truth is the mean of the good readbacks over the hold window;
- a manual release ends every phase by its own deadline;
- operator and interlock requests (pause, resume, skip, abort, fail) each map to one
  response, whatever phase the run is in.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from acquisition.run.state import State
from drivers.sample import Sample

SETTLE_FLOOR_FS = 0.005  # tolerance never below 0.5 % of full scale (noise at low flow)


def settle_tolerance(setpoint: float, tolerance_pct: float, full_scale: float) -> float:
    """How far from the setpoint a readback may be and still count as settled."""
    return max(setpoint * tolerance_pct / 100, SETTLE_FLOOR_FS * full_scale)


def in_band_since(readbacks: Iterable[Sample], setpoint: float, tolerance: float
                  ) -> int | None:
    """Monotonic ns since when every readback (oldest first) has been good and within the
    tolerance; None when the latest one is not."""
    since = None
    for sample in readbacks:
        if sample.ok and sample.value is not None and abs(sample.value - setpoint) <= tolerance:
            since = since if since is not None else sample.mono_ns
        else:
            since = None
    return since


class Settling(StrEnum):
    STABLE = "stable"
    WAITING = "waiting"
    TIMED_OUT = "timed_out"


def settling(since_ns: int | None, now_ns: int, window_ns: int, deadline_ns: int) -> Settling:
    """Stable once in band for the whole window; timed out at the deadline, not before."""
    if now_ns >= deadline_ns:
        return Settling.TIMED_OUT
    if since_ns is not None and now_ns - since_ns >= window_ns:
        return Settling.STABLE
    return Settling.WAITING


def good_values(readbacks: Iterable[Sample]) -> list[float]:
    """The values the truth is computed from: good readbacks only."""
    return [sample.value for sample in readbacks if sample.ok and sample.value is not None]


def phase_deadline(started_ns: int, duration_s: float, release_ends_ns: int | None) -> int:
    """When a phase must end: its own duration, or a manual release's end if sooner."""
    own = started_ns + int(duration_s * 1e9)
    return own if release_ends_ns is None else min(own, release_ends_ns)


class Response(StrEnum):
    END_RUN = "end_run"  # make safe and close the run
    SKIP_STEP = "skip_step"  # close the step without truth, go on with the next
    PAUSE = "pause"  # make safe, wait for resume, skip or an end
    REDO_STEP = "redo_step"  # resume: arm the paused step again
    IGNORE = "ignore"  # nothing to do (e.g. resume while not paused)


ENDING = {"abort": State.ABORTED, "fail": State.FAILED}  # request -> the run's final state


def respond(request: str, paused: bool) -> Response:
    """What the run does with a request, while releasing or while paused."""
    if request in ENDING:
        return Response.END_RUN
    if request == "skip":
        return Response.SKIP_STEP
    if request == "pause":
        return Response.IGNORE if paused else Response.PAUSE
    if request == "resume":
        return Response.REDO_STEP if paused else Response.IGNORE
    raise ValueError(f"unknown run request {request!r}")
