"""Profile-driven Modbus devices: poll any register map; set, verify and zero an MFC's flow.

A driver knows one device and its register map; it does not know runs, gases or
mass rates (acquisition converts). Every failure becomes a sample with a quality flag
or a clear error, never a crash of the poll loop.
"""

from __future__ import annotations

import math

from drivers.modbus_line import (
    DeviceExceptionError,
    DeviceTimeoutError,
    LineDownError,
    ModbusError,
    ModbusLine,
)
from drivers.profile import Profile
from drivers.sample import Quality, Sample, now_stamps

# A float32 setpoint reads back with float32 rounding; allow that and no more.
SETPOINT_READBACK_TOLERANCE = 1e-5


class SetpointError(ModbusError):
    """A setpoint was refused before sending, or did not read back as written."""


def quality_of(error: ModbusError) -> Quality:
    if isinstance(error, LineDownError):
        return Quality.DISCONNECTED
    if isinstance(error, DeviceExceptionError):
        return Quality.DEVICE_ERROR
    if isinstance(error, DeviceTimeoutError):
        return Quality.TIMEOUT
    return Quality.DEVICE_ERROR


class ModbusDevice:
    """A device at a unit id on a shared line whose registers a profile describes."""

    def __init__(self, name: str, line: ModbusLine, unit_id: int, profile: Profile) -> None:
        self.name = name
        self.line = line
        self.unit_id = unit_id
        self.profile = profile
        self._blocks = profile.poll_blocks()
        self._polls = 0

    async def poll(self) -> list[Sample]:
        """Read the polled registers due now, in as few transactions as the profile allows."""
        due = [block for block in self._blocks if block.due(self._polls)]
        self._polls += 1
        samples: list[Sample] = []
        for block in due:
            try:
                words = await self.line.read_registers(
                    self.unit_id, block.start, block.count, block.function
                )
            except ModbusError as error:
                t_ns, mono_ns = now_stamps()
                samples.extend(
                    Sample(t_ns, mono_ns, self.name, member, None,
                           self.profile.unit_of(member), quality_of(error), str(error))
                    for member in block.members
                )
                continue
            t_ns, mono_ns = now_stamps()
            for member in block.members:
                samples.append(self._sample(member, block.start, words, t_ns, mono_ns))
        return samples

    def _sample(
        self, member: str, start: int, words: list[int], t_ns: int, mono_ns: int
    ) -> Sample:
        register = self.profile.registers[member]
        offset = register.address - start
        value = register.decode(words[offset : offset + register.width],
                                self.profile.word_order)
        unit = self.profile.unit_of(member)
        if not math.isfinite(value):
            return Sample(t_ns, mono_ns, self.name, member, None, unit, Quality.BAD_VALUE,
                          f"{self.name}.{member}: device returned {value}")
        return Sample(t_ns, mono_ns, self.name, member, value, unit)

    async def read(self, register_name: str) -> float:
        """Read one register by name (raises ModbusError on failure)."""
        register = self.profile.registers[register_name]
        words = await self.line.read_registers(
            self.unit_id, register.address, register.width, register.function
        )
        return register.decode(words, self.profile.word_order)



class MfcDriver(ModbusDevice):
    """A mass flow controller: a Modbus device whose flow can be set, verified and zeroed."""

    def __init__(
        self, name: str, line: ModbusLine, unit_id: int, profile: Profile, full_scale: float
    ) -> None:
        super().__init__(name, line, unit_id, profile)
        self.full_scale = full_scale

    @property
    def flow_unit(self) -> str:
        return self.profile.flow_unit

    async def set_flow(self, value: float) -> float:
        """Write the setpoint (profile flow unit) and read it back; return what the device holds."""
        if not math.isfinite(value) or value < 0 or value > self.full_scale:
            raise SetpointError(
                f"{self.name}: setpoint {value} {self.flow_unit} is outside "
                f"0..{self.full_scale} {self.flow_unit} (full scale)"
            )
        register = self.profile.registers["setpoint"]
        await self.line.write_registers(
            self.unit_id, register.address,
            register.encode(value, self.profile.word_order),
        )
        held = await self.read("setpoint")
        if abs(held - value) > SETPOINT_READBACK_TOLERANCE * max(self.full_scale, abs(value)):
            raise SetpointError(
                f"{self.name}: wrote setpoint {value} {self.flow_unit} "
                f"but the device holds {held}"
            )
        return held

    async def zero(self) -> None:
        """Close the flow: setpoint 0, verified."""
        await self.set_flow(0.0)

    async def run_action(self, action_name: str) -> None:
        """Run one of the profile's fixed actions (tare, totalizer reset)."""
        action = self.profile.actions.get(action_name)
        if action is None:
            raise ModbusError(
                f"{self.name}: profile '{self.profile.name}' has no action '{action_name}' "
                f"(has: {', '.join(self.profile.actions) or 'none'})"
            )
        await self.line.write_registers(self.unit_id, action.address, action.values)
