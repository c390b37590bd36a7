"""States of a calibration run and the transitions allowed between them.

The table is the state machine: the scheduler checks every transition against it, and
an illegal one raises (a bug found at once, not a run in a state nobody designed).
"""

from __future__ import annotations

import secrets
import time
from enum import StrEnum


class State(StrEnum):
    IDLE = "idle"  # no run yet, or a run created and not yet arming
    ARMING = "arming"  # the MFC chosen: opening the valve, writing the setpoint
    SETTLING = "settling"  # waiting for the readback to stay within tolerance
    HOLDING = "holding"  # averaging the readback: the truth window
    PAUSED = "paused"  # flow zeroed and valve closed, waiting for resume or abort
    ABORTING = "aborting"  # making everything safe before closing the run
    COMPLETED = "completed"
    ABORTED = "aborted"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # found open after a crash (set in the store, at start-up)


RELEASING = {State.ARMING, State.SETTLING, State.HOLDING}
FINAL = {State.COMPLETED, State.ABORTED, State.FAILED, State.INTERRUPTED}

TRANSITIONS: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.IDLE, State.ARMING, State.ABORTING}),  # IDLE: a new run
    State.ARMING: frozenset({State.ARMING, State.SETTLING, State.PAUSED, State.ABORTING,
                             State.COMPLETED}),  # ARMING twice: waiting for a position
    State.SETTLING: frozenset({State.HOLDING, State.ARMING, State.PAUSED, State.ABORTING,
                               State.COMPLETED}),  # ARMING: settle timeout, next step
    State.HOLDING: frozenset({State.ARMING, State.PAUSED, State.ABORTING, State.COMPLETED}),
    State.PAUSED: frozenset({State.ARMING, State.ABORTING, State.COMPLETED}),
    State.ABORTING: frozenset({State.ABORTED, State.FAILED}),
    State.COMPLETED: frozenset({State.IDLE}),
    State.ABORTED: frozenset({State.IDLE}),
    State.FAILED: frozenset({State.IDLE}),
    State.INTERRUPTED: frozenset(),
}


class RunRejectedError(Exception):
    """A command that does not fit the run's state (e.g. start while running)."""


class IllegalTransitionError(RuntimeError):
    """A move the state machine does not have: a bug in the scheduler."""


def check_transition(old: State, new: State) -> None:
    if new not in TRANSITIONS[old]:
        raise IllegalTransitionError(f"run state {old} cannot go to {new} (allowed: "
                                     f"{', '.join(sorted(TRANSITIONS[old])) or 'none'})")


def new_run_id() -> str:
    """Time-sortable and unique: 20261124T081500Z-3f2a."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)
