"""A Modbus relay module driving normally-closed shutoff valves: coils that read back.

Coil on = relay energised = valve open. `open_since` lets tests check that gas could
only pass while a release was active.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from pymodbus.constants import ExcCodes

from simulators.modbus_device import SlaveDevice

READ_COILS, WRITE_COIL, WRITE_COILS = 1, 5, 15


class SimulatedRelay(SlaveDevice):
    functions = frozenset({READ_COILS, WRITE_COIL, WRITE_COILS})

    def __init__(self, name: str, unit_id: int, coils: int = 8) -> None:
        super().__init__(name, unit_id)
        self.coils = [False] * coils
        self.switches = 0  # how many times any coil changed state
        self.open_since: dict[int, float] = {}

    def is_open(self, coil: int) -> bool:
        return self.coils[coil]

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[bool] | ExcCodes:
        if address + count > len(self.coils):
            return ExcCodes.ILLEGAL_ADDRESS
        return self.coils[address:address + count]

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int]
    ) -> ExcCodes | None:
        if func_code not in (WRITE_COIL, WRITE_COILS):
            return ExcCodes.ILLEGAL_FUNCTION
        if address + len(values) > len(self.coils):
            return ExcCodes.ILLEGAL_ADDRESS
        for offset, value in enumerate(values):
            coil, on = address + offset, bool(value)
            if self.coils[coil] != on:
                self.switches += 1
                if on:
                    self.open_since[coil] = time.monotonic()
                else:
                    self.open_since.pop(coil, None)
            self.coils[coil] = on
        return None
