"""Where a device is reached and how to get back to it: the settings every serial port
and TCP peer share, the strict model base of all settings, and the reconnect backoff."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

STANDARD_BAUD_RATES = (1200, 2400, 4800, 9600, 14400, 19200, 38400, 57600, 115200, 230400)


class StrictModel(BaseModel):
    """Settings read from a file: an unknown key is an error (a typo must not be ignored)
    and every number is finite (an infinite limit is no limit)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Endpoint(StrictModel):
    """A serial port (8 data bits, parity, stop bits at a standard baud rate) or a TCP
    peer, and how soon to try again after losing it."""

    port: str | None = Field(None, description="serial device, e.g. /dev/serial/by-id/...")
    host: str | None = None
    tcp_port: int | None = Field(None, ge=1, le=65535)
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    reconnect_min_s: float = Field(0.2, gt=0, le=60)
    reconnect_max_s: float = Field(5.0, gt=0, le=600)

    @field_validator("baudrate")
    @classmethod
    def _standard_baud(cls, value: int) -> int:
        if value not in STANDARD_BAUD_RATES:
            raise ValueError(f"{value} is not a standard baud rate; use one of "
                             + ", ".join(map(str, STANDARD_BAUD_RATES)))
        return value

    @property
    def tcp_address(self) -> str:
        return f"{self.host}:{self.tcp_port}"


class Backoff:
    """Reconnect delays: `min_s`, doubling up to `max_s`, back to `min_s` after a success."""

    def __init__(self, min_s: float, max_s: float) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self._delay_s = min_s

    def next_delay(self) -> float:
        """How long to wait before the next attempt; the one after waits twice as long."""
        delay, self._delay_s = self._delay_s, min(self._delay_s * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._delay_s = self.min_s
