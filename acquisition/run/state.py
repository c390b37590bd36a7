"""States of a calibration run and the readable snapshot of where a run is."""

from __future__ import annotations

import secrets
import time
from enum import StrEnum


class State(StrEnum):
    IDLE = "idle"
    ARMING = "arming"  # choosing the MFC, opening the valve, writing the setpoint
    SETTLING = "settling"  # waiting for the readback to stay within tolerance
    HOLDING = "holding"  # averaging the readback: the truth window
    PAUSED = "paused"  # flow zeroed and valve closed, waiting for resume or abort
    ABORTING = "aborting"  # making everything safe before closing the run
    COMPLETED = "completed"
    ABORTED = "aborted"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # found open after a crash


RELEASING = {State.ARMING, State.SETTLING, State.HOLDING}
FINAL = {State.COMPLETED, State.ABORTED, State.FAILED, State.INTERRUPTED}


def new_run_id() -> str:
    """Time-sortable and unique: 20261124T081500Z-3f2a."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(2)
