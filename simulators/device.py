"""One simulated MFC as the bus sees it: register map, physics and faults."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import structlog
from pymodbus.constants import ExcCodes

from acquisition.config.station import MfcConfig
from simulators.faults import Fault
from simulators.modbus_device import WRITE_FUNCTIONS, ModbusDevice
from simulators.physics import DEFAULT_NOISE, DEFAULT_TIME_CONSTANT_S, MfcPhysics, Reading

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

SETPOINT_LIMIT = 1.05  # of full scale: what a real controller still accepts
FLOAT32_SLACK = 1e-7  # a float32 setpoint of exactly the limit must not be refused
KPA_TO = {"kPa": 1.0, "psia": 1 / 6.894757, "bar": 0.01, "bara": 0.01, "mbar": 10.0, "Pa": 1e3}
CELSIUS_TO: dict[str, Callable[[float], float]] = {
    "degC": lambda c: c,
    "K": lambda c: c + 273.15,
    "degF": lambda c: c * 1.8 + 32,
}


class SimulatedMfc(ModbusDevice):
    """An MFC at a unit id: answers Modbus requests from its profile's register map."""

    def __init__(
        self,
        name: str,
        config: MfcConfig,
        rng: np.random.Generator,
        *,
        time_constant_s: float = DEFAULT_TIME_CONSTANT_S,
        noise: float = DEFAULT_NOISE,
        fault: Fault | None = None,
    ) -> None:
        super().__init__(name, config.unit_id, config.resolved_profile, fault)
        self.full_scale = config.full_scale
        self.physics = MfcPhysics(
            config.full_scale, rng, time_constant_s=time_constant_s, noise=noise
        )
        self._reference_k = 273.15 + (
            self.profile.reference_temperature_c
            if config.reference_temperature_c is None
            else config.reference_temperature_c
        )
        self._reference_kpa = config.reference_pressure_kpa or self.profile.reference_pressure_kpa
        self._pressure_per_kpa = self._unit("pressure", KPA_TO)
        self._temperature_of = self._unit("temperature", CELSIUS_TO)
        self._held: dict[str, float] = {}  # writable registers with no physics behind them
        self._echo: list[int] = []  # a write-single reply repeats what was written

    def _unit(self, register: str, table: dict[str, _T]) -> _T | None:
        if register not in self.profile.registers:
            return None
        unit = self.profile.unit_of(register)
        if unit not in table:
            raise ValueError(
                f"profile '{self.profile.name}': the simulator cannot produce {register} in "
                f"'{unit}' (known: {', '.join(table)})"
            )
        return table[unit]

    # --- what tests and operators use -------------------------------------------------

    @property
    def setpoint(self) -> float:
        return self.physics.setpoint

    @setpoint.setter
    def setpoint(self, value: float) -> None:
        self.physics.setpoint = value

    def true_flow(self) -> float:
        return self.physics.true_flow()

    # --- the Modbus side --------------------------------------------------------------

    def values(self) -> dict[str, float]:
        reading = self.physics.read()
        setpoint = self.physics.setpoint
        computed = {
            "flow": reading.flow,
            "setpoint": setpoint,
            "setpoint_pct": 100.0 * setpoint / self.full_scale,
            "measure_pct": 100.0 * reading.flow / self.full_scale,
            "capacity": self.full_scale,
            "volumetric_flow": self._volumetric(reading),
            "totalizer": reading.totalizer,
        }
        if self._pressure_per_kpa is not None:
            computed["pressure"] = reading.pressure_kpa * self._pressure_per_kpa
        if self._temperature_of is not None:
            computed["temperature"] = self._temperature_of(reading.temperature_c)
        return {name: computed.get(name, self._held.get(name, 0.0))
                for name in self.profile.registers}

    def _volumetric(self, reading: Reading) -> float:
        """Standard flow converted to line conditions (ideal gas)."""
        line_k = 273.15 + reading.temperature_c
        pressure_ratio = self._reference_kpa / reading.pressure_kpa
        return reading.flow * line_k / self._reference_k * pressure_ratio

    async def async_getValues(  # the name pymodbus calls
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | ExcCodes:
        if func_code == 6:
            return self._echo
        return await super().async_getValues(device_id, func_code, address, count)

    async def async_setValues(  # the name pymodbus calls
        self, device_id: int, func_code: int, address: int, values: Sequence[int]
    ) -> ExcCodes | None:
        if func_code not in WRITE_FUNCTIONS:
            return ExcCodes.ILLEGAL_FUNCTION
        words = [int(v) for v in values]
        if (action := self.bank.action(address, words)) is not None:
            self._run_action(action)
        elif self.bank.is_action_address(address):
            return ExcCodes.ILLEGAL_VALUE  # a command this device does not know
        else:
            written = self.bank.decode_write(address, words)
            if isinstance(written, ExcCodes):
                return written
            if (refused := self._apply(written)) is not None:
                return refused
        self._echo = words
        return None

    def _apply(self, written: dict[str, float]) -> ExcCodes | None:
        """Apply a decoded write, all of it or (on a bad value) none of it."""
        setpoint = None
        for name, value in written.items():
            if name in ("setpoint", "setpoint_pct"):
                setpoint = value if name == "setpoint" else value / 100.0 * self.full_scale
                limit = SETPOINT_LIMIT * self.full_scale * (1 + FLOAT32_SLACK)
                if not (math.isfinite(setpoint) and 0.0 <= setpoint <= limit):
                    return ExcCodes.ILLEGAL_VALUE
        if setpoint is not None:
            self.physics.setpoint = setpoint
        self._held.update(
            (name, value) for name, value in written.items()
            if name not in ("setpoint", "setpoint_pct")
        )
        return None

    def _run_action(self, action: str) -> None:
        handlers = {"totalizer_reset": self.physics.reset_totalizer, "tare": self.physics.tare}
        if action in handlers:
            handlers[action]()
        log.info("sim action", device=self.name, action=action, modelled=action in handlers)
