"""Faults a simulated device can be told to show, so that failure paths can be exercised."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

FaultKind = Literal["no_reply", "bad_crc", "exception", "slow"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
DEFAULT_EXCEPTION_CODE = 4  # server device failure
DEFAULT_SLOW_S = 1.0


@dataclass(frozen=True)
class Fault:
    """One active fault: `code` is used by `exception`, `seconds` by `slow`."""

    kind: FaultKind
    code: int = DEFAULT_EXCEPTION_CODE
    seconds: float = DEFAULT_SLOW_S


def make_fault(kind: str, *, code: int | None = None, seconds: float | None = None) -> Fault:
    """Validate a fault request; a wrong argument is an error, never silently ignored."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault '{kind}'; faults: {', '.join(FAULT_KINDS)} (or clear)")
    if code is not None and kind != "exception":
        raise ValueError("`code` applies only to the 'exception' fault")
    if seconds is not None and kind != "slow":
        raise ValueError("`seconds` applies only to the 'slow' fault")
    if code is not None and not 1 <= code <= 0x7F:
        raise ValueError(f"Modbus exception code must be 1..127 (got {code})")
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"`seconds` must be a positive number (got {seconds})")
    return Fault(
        kind,  # type: ignore[arg-type]  # checked against FAULT_KINDS above
        DEFAULT_EXCEPTION_CODE if code is None else code,
        DEFAULT_SLOW_S if seconds is None else seconds,
    )
