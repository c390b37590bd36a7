"""What every simulated Modbus slave shares: a unit id, faults, replies; a register map.

The object is also the datastore pymodbus's request PDUs update (`datastore_update`),
so register semantics (read/write replies, exception codes) come from pymodbus itself.
Subclasses say what the registers hold (`values`) and what a write does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import structlog
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from drivers.profile import Profile
from simulators.faults import Fault, make_fault
from simulators.registers import RegisterBank

log = structlog.get_logger(__name__)

TABLE_OF_FUNCTION = {3: "holding", 4: "input", 6: "holding", 16: "holding"}
WRITE_FUNCTIONS = (6, 16)


class SlaveDevice(ABC):
    """A slave at a unit id: faults, and replies from pymodbus's request semantics."""

    functions: frozenset[int] = frozenset()  # function codes the device implements

    def __init__(self, name: str, unit_id: int, fault: Fault | None = None) -> None:
        self.name = name
        self.unit_id = unit_id
        self.fault = fault
        self.requests_served = 0  # requests addressed to this device, answered or not

    @abstractmethod
    async def async_getValues(  # the name pymodbus calls
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes: ...

    @abstractmethod
    async def async_setValues(  # the name pymodbus calls
        self, device_id: int, func_code: int, address: int, values: Sequence[int]
    ) -> ExcCodes | None: ...

    def set_fault(
        self, kind: str, *, code: int | None = None, seconds: float | None = None
    ) -> None:
        """Make the device misbehave from now on; `clear` (or clear_fault()) ends it."""
        self.fault = None if kind == "clear" else make_fault(kind, code=code, seconds=seconds)
        log.info("sim fault", device=self.name, fault=kind)

    def clear_fault(self) -> None:
        self.set_fault("clear")

    async def handle(self, request: ModbusPDU) -> ModbusPDU | None:
        """The reply to one request addressed to this device, or None for silence."""
        self.requests_served += 1
        fault = self.fault
        if fault is not None and fault.kind == "no_reply":
            return None
        if fault is not None and fault.kind == "exception":
            response: ModbusPDU = ExceptionResponse(request.function_code, fault.code)
        elif request.function_code not in self.functions:
            response = ExceptionResponse(request.function_code, ExcCodes.ILLEGAL_FUNCTION)
        else:
            response = await request.datastore_update(self, request.dev_id)  # type: ignore[arg-type]
        # pymodbus leaves these unset (ExceptionResponse even defaults to device 1).
        response.dev_id = request.dev_id
        response.transaction_id = request.transaction_id
        return response



class ModbusDevice(SlaveDevice):
    """A slave whose holding/input registers a profile describes."""

    functions = frozenset(TABLE_OF_FUNCTION)

    def __init__(self, name: str, unit_id: int, profile: Profile,
                 fault: Fault | None = None) -> None:
        super().__init__(name, unit_id, fault)
        self.profile = profile
        self.bank = RegisterBank(profile)

    @abstractmethod
    def values(self) -> dict[str, float]:
        """Every register's value now, sampled once so that one read is self-consistent."""

    async def async_getValues(  # the name pymodbus calls
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | ExcCodes:
        return self.bank.read(TABLE_OF_FUNCTION[func_code], address, count, self.values())

    async def async_setValues(  # the name pymodbus calls; a read-only device by default
        self, device_id: int, func_code: int, address: int, values: Sequence[int]
    ) -> ExcCodes | None:
        if func_code not in WRITE_FUNCTIONS:
            return ExcCodes.ILLEGAL_FUNCTION
        return ExcCodes.ILLEGAL_ADDRESS
