"""One physical Modbus line (serial port, RTU-over-TCP gateway or Modbus TCP) shared by devices.

All traffic on a line goes through one lock, since RS-485 carries one transaction at a
time. The line reconnects by itself, with backoff, after the adapter vanishes, and turns
every pymodbus failure into one of three errors that say what happened.
"""

from __future__ import annotations

import asyncio
import os
import termios
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import structlog
from pydantic import Field, model_validator
from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from drivers.endpoint import Backoff, Endpoint

log = structlog.get_logger(__name__)

MODBUS_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ModbusError(Exception):
    """Base of every error a line raises; the message names the line and the device."""


class LineDownError(ModbusError):
    """The line itself is unusable: port missing, adapter unplugged, TCP refused."""


class DeviceTimeoutError(ModbusError):
    """No valid reply in time (silence, or a reply with a bad CRC that was dropped)."""


class DeviceExceptionError(ModbusError):
    """The device answered with a Modbus exception."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class LineSettings(Endpoint):
    """How to open one line: the `[lines.<name>]` table of a station config."""

    transport: Literal["serial", "rtu-tcp", "tcp"] = "serial"
    baudrate: int = 19200
    timeout_s: float = Field(0.3, gt=0, le=30, description="per request")
    retries: int = Field(1, ge=0, le=10, description="extra tries after a timeout")

    @model_validator(mode="after")
    def _endpoint_given(self) -> LineSettings:
        if self.transport == "serial" and not self.port:
            raise ValueError("a serial line needs `port`")
        if self.transport != "serial" and not (self.host and self.tcp_port):
            raise ValueError(f"a {self.transport} line needs `host` and `tcp_port`")
        return self

    @property
    def endpoint(self) -> str:
        return self.port if self.transport == "serial" else self.tcp_address


def _make_client(settings: LineSettings) -> AsyncModbusSerialClient | AsyncModbusTcpClient:
    # reconnect_delay=0 turns pymodbus's own background reconnect off: it only starts
    # after a first successful connect, so the line does its own, from the first try.
    common = {"timeout": settings.timeout_s, "retries": settings.retries, "reconnect_delay": 0}
    if settings.transport == "serial":
        return AsyncModbusSerialClient(
            settings.port or "",
            framer=FramerType.RTU,
            baudrate=settings.baudrate,
            parity=settings.parity,
            stopbits=settings.stopbits,
            bytesize=settings.bytesize,
            **common,
        )
    framer = FramerType.RTU if settings.transport == "rtu-tcp" else FramerType.SOCKET
    return AsyncModbusTcpClient(
        settings.host or "", port=settings.tcp_port or 502, framer=framer, **common
    )


class ModbusLine:
    """A shared Modbus line: serialized access, automatic reconnect, clear errors."""

    def __init__(self, name: str, settings: LineSettings) -> None:
        self.name = name
        self.settings = settings
        self._client = _make_client(settings)
        # A silent device must not make the client drop a TCP gateway that other
        # devices still answer through; the line decides when it is down.
        self._client.set_max_no_responses(1_000_000)
        self._lock = asyncio.Lock()
        self._backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s)
        self._next_attempt = 0.0
        self.transactions = 0
        self.failures = 0  # transactions that ended in an error of any kind
        self.reconnects = 0
        self.last_error: str | None = None
        self.on_state_change: Callable[[bool, str], None] | None = None
        self._was_up: bool | None = None

    @property
    def connected(self) -> bool:
        return self._client.connected

    def close(self) -> None:
        self._client.close()

    def health(self) -> dict[str, Any]:
        """Counters for the station's status: is the line up, how often it failed and why."""
        return {"connected": self.connected, "transactions": self.transactions,
                "failures": self.failures, "reconnects": self.reconnects,
                "last_error": self.last_error}

    def retry_now(self) -> None:
        """Skip the reconnect backoff once: used before a safety action that must be tried."""
        self._next_attempt = 0.0

    def _port_problem(self) -> str:
        """Why a serial port did not open, when the file system tells (pymodbus only
        returns False): the two faults a field engineer meets first."""
        port = self.settings.port
        if self.settings.transport != "serial" or not port:
            return ""
        if not os.path.exists(port):
            return ": no such device (adapter unplugged, or a different name?)"
        if not os.access(port, os.R_OK | os.W_OK):
            return ": permission denied (is the user in the 'dialout' group?)"
        return ""

    async def _ensure_connected(self) -> None:
        if self._client.connected:
            return
        now = time.monotonic()
        if now < self._next_attempt:
            raise LineDownError(
                f"line '{self.name}' ({self.settings.endpoint}) is down; "
                f"next reconnect in {self._next_attempt - now:.1f} s"
            )
        try:
            opened = await self._client.connect()
        except (OSError, termios.error, ValueError) as error:
            # pyserial raises termios.error (not an OSError) when the port refuses
            # its settings, e.g. a parity the adapter or a pty cannot do.
            self._client.close()
            opened = False
            cause = f": {error}"
        else:
            cause = "" if opened else self._port_problem()
        if opened:
            self._backoff.reset()
            if self._was_up is False:
                self.reconnects += 1
            self._report(True, "connected")
            return
        self._next_attempt = now + self._backoff.next_delay()
        reason = f"cannot open {self.settings.endpoint}{cause}"
        self._report(False, reason)
        raise LineDownError(f"line '{self.name}': {reason}")

    def _report(self, up: bool, reason: str) -> None:
        if up == self._was_up:
            return
        self._was_up = up
        log.info("modbus line up" if up else "modbus line down", line=self.name, reason=reason)
        if self.on_state_change is not None:
            self.on_state_change(up, reason)

    async def _call(
        self, what: str, unit_id: int, request: Callable[[], Awaitable[ModbusPDU]]
    ) -> ModbusPDU:
        """Run one request under the line lock and translate every failure."""
        where = f"line '{self.name}' unit {unit_id}"
        try:
            response = await self._transact(where, what, request)
        except ModbusError as error:
            self.failures += 1
            self.last_error = str(error)
            raise
        if response.isError():
            code = getattr(response, "exception_code", 0)
            meaning = MODBUS_EXCEPTIONS.get(code, "unknown exception")
            self.failures += 1
            self.last_error = (f"{where}: {what}: device replied Modbus exception {code} "
                               f"({meaning})")
            raise DeviceExceptionError(self.last_error, code)
        return response

    async def _transact(
        self, where: str, what: str, request: Callable[[], Awaitable[ModbusPDU]]
    ) -> ModbusPDU:
        async with self._lock:
            await self._ensure_connected()
            try:
                return await request()
            except ConnectionException as exc:
                self._client.close()
                self._report(False, str(exc))
                raise LineDownError(f"{where}: {what}: connection lost") from exc
            except ModbusIOException as exc:
                if not self._client.connected:
                    self._report(False, "connection lost")
                    raise LineDownError(f"{where}: {what}: connection lost") from exc
                raise DeviceTimeoutError(
                    f"{where}: {what}: no valid reply within {self.settings.timeout_s} s "
                    f"({self.settings.retries + 1} tries)"
                ) from exc
            except ModbusException as exc:
                raise DeviceTimeoutError(f"{where}: {what}: {exc}") from exc
            finally:
                self.transactions += 1

    async def read_registers(
        self, unit_id: int, address: int, count: int, function: str = "holding"
    ) -> list[int]:
        reader = (
            self._client.read_holding_registers
            if function == "holding"
            else self._client.read_input_registers
        )
        response = await self._call(
            f"read {count} {function} registers at {address}",
            unit_id,
            lambda: reader(address, count=count, device_id=unit_id),
        )
        if len(response.registers) < count:
            raise DeviceTimeoutError(
                f"line '{self.name}' unit {unit_id}: short reply "
                f"({len(response.registers)} of {count} registers)"
            )
        return list(response.registers[:count])

    async def write_registers(self, unit_id: int, address: int, values: list[int]) -> None:
        await self._call(
            f"write {len(values)} registers at {address}",
            unit_id,
            lambda: self._client.write_registers(address, values, device_id=unit_id),
        )

    async def read_coils(self, unit_id: int, address: int, count: int = 1) -> list[bool]:
        response = await self._call(
            f"read {count} coils at {address}",
            unit_id,
            lambda: self._client.read_coils(address, count=count, device_id=unit_id),
        )
        return list(response.bits[:count])

    async def write_coil(self, unit_id: int, address: int, value: bool) -> None:
        await self._call(
            f"write coil {address}",
            unit_id,
            lambda: self._client.write_coil(address, value, device_id=unit_id),
        )
