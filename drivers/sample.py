"""The one record every driver emits: a timestamped value with a quality flag."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum


class Quality(StrEnum):
    """Why a sample can or cannot be trusted. Anything but OK carries no valid value."""

    OK = "ok"
    TIMEOUT = "timeout"  # the device did not answer in time (includes corrupted replies)
    DEVICE_ERROR = "device-error"  # the device answered with a Modbus exception
    DISCONNECTED = "disconnected"  # the line itself is down (adapter unplugged, TCP refused)
    BAD_VALUE = "bad-value"  # the device answered with something that is not a number


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading. `t_ns` is UTC wall time when the reply arrived; `mono_ns` is for intervals."""

    t_ns: int
    mono_ns: int
    device: str
    channel: str
    value: float | None
    unit: str
    quality: Quality = Quality.OK
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.quality is Quality.OK


def now_stamps() -> tuple[int, int]:
    """UTC nanoseconds and a monotonic stamp, taken together."""
    return time.time_ns(), time.monotonic_ns()
