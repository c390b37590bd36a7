"""Register profiles of Modbus devices (MFCs, anemometers, gas analyzers): a vendor's
Modbus map as data (`drivers/profiles/*.toml`).

A profile says where each value lives, how it is encoded and in which unit, so that
supporting another controller means writing a TOML file, not code.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pymodbus.client.mixin import ModbusClientMixin

PROFILE_DIR = Path(__file__).with_name("profiles")

RegisterType = Literal["float32", "uint16", "int16", "uint32", "int32"]
WordOrder = Literal["big", "little"]

# Registers an extra transaction costs about as much as reading: 13 bytes of framing
# plus two 3.5-character gaps (Modbus RTU framing) is about 20 character times = 10 registers.
MERGE_GAP_REGISTERS = 10
MAX_REGISTERS_PER_READ = 125

WIDTH = {"float32": 2, "uint16": 1, "int16": 1, "uint32": 2, "int32": 2}
_DATATYPE = ModbusClientMixin.DATATYPE
_CODEC = {
    "float32": _DATATYPE.FLOAT32,
    "uint16": _DATATYPE.UINT16,
    "int16": _DATATYPE.INT16,
    "uint32": _DATATYPE.UINT32,
    "int32": _DATATYPE.INT32,
}
INTEGER_LIMITS = {
    "uint16": (0, 0xFFFF),
    "int16": (-0x8000, 0x7FFF),
    "uint32": (0, 0xFFFF_FFFF),
    "int32": (-0x8000_0000, 0x7FFF_FFFF),
}


# What a device of each kind must report for the daemon to use it (a gas analyzer: the
# concentration of the gas the facility releases).
REQUIRED_REGISTERS = {"mfc": ("flow", "setpoint"), "anemometer": ("wind_speed", "wind_direction"),
                      "gas_analyzer": ("ch4",)}


class Register(BaseModel):
    """One value in the device's map, at a PDU (zero-based) address."""

    model_config = ConfigDict(extra="forbid")

    address: int = Field(ge=0, le=0xFFFF)
    type: RegisterType = "float32"
    function: Literal["holding", "input"] = "holding"
    scale: float = 1.0
    unit: str | None = None  # None: the profile's flow unit; "" for a plain number
    writable: bool = False

    @property
    def width(self) -> int:
        return WIDTH[self.type]

    def decode(self, words: Sequence[int], word_order: WordOrder) -> float:
        """Registers as read from the device -> value in the register's unit."""
        raw = ModbusClientMixin.convert_from_registers(
            list(words), _CODEC[self.type], word_order=word_order
        )
        return float(raw) * self.scale  # type: ignore[arg-type]  # scalar for these types

    def encode(self, value: float, word_order: WordOrder) -> list[int]:
        """Value in the register's unit -> registers to write; integers must fit."""
        raw: float | int = value / self.scale
        if self.type in INTEGER_LIMITS:
            raw = round(raw)
            low, high = INTEGER_LIMITS[self.type]
            if not low <= raw <= high:
                raise ValueError(f"{value} does not fit a {self.type} register "
                                 f"(scale {self.scale})")
        return ModbusClientMixin.convert_to_registers(raw, _CODEC[self.type],
                                                      word_order=word_order)


class Action(BaseModel):
    """A fixed write that makes the device do something (tare, totalizer reset)."""

    model_config = ConfigDict(extra="forbid")

    address: int = Field(ge=0, le=0xFFFF)
    values: list[int] = Field(min_length=1)


class Profile(BaseModel):
    """A controller model's register map, reference conditions and polling set."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["mfc", "anemometer", "gas_analyzer"] = "mfc"
    description: str = ""
    flow_unit: str = Field(description="unit of flow registers; any unit-less register's unit")
    reference_temperature_c: float = 0.0
    reference_pressure_kpa: float = Field(101.325, gt=0)
    word_order: WordOrder = "big"
    poll: list[str] = Field(min_length=1)
    # Polled registers read only on every n-th poll (a fluid temperature changes slowly):
    # each transaction saved on a shared RS-485 line is time for the other devices.
    poll_every: dict[str, int] = {}
    registers: dict[str, Register]
    actions: dict[str, Action] = {}

    @model_validator(mode="after")
    def _check_map(self) -> Profile:
        for required in REQUIRED_REGISTERS[self.kind]:
            if required not in self.registers:
                raise ValueError(f"a {self.kind} profile must define register '{required}'")
        if self.kind == "mfc" and not self.registers["setpoint"].writable:
            raise ValueError("register 'setpoint' must be writable")
        unknown = [name for name in self.poll if name not in self.registers]
        if unknown:
            raise ValueError(f"poll names registers that are not defined: {unknown}")
        not_polled = [name for name in self.poll_every if name not in self.poll]
        if not_polled:
            raise ValueError(f"poll_every names registers that are not polled: {not_polled}")
        below_one = [name for name, every in self.poll_every.items() if every < 1]
        if below_one:
            raise ValueError(f"poll_every must be 1 or more (every n-th poll): {below_one}")
        return self

    def unit_of(self, name: str) -> str:
        unit = self.registers[name].unit
        return self.flow_unit if unit is None else unit

    def with_overrides(
        self, addresses: dict[str, int] | None = None, word_order: WordOrder | None = None
    ) -> Profile:
        """This profile with some register addresses moved and/or another word order."""
        registers = dict(self.registers)
        for name, address in (addresses or {}).items():
            if name not in registers:
                raise ValueError(f"register '{name}' is not in profile '{self.name}'")
            registers[name] = registers[name].model_copy(update={"address": address})
        return self.model_copy(
            update={"registers": registers, "word_order": word_order or self.word_order}
        )

    def poll_blocks(self) -> list[Block]:
        """The polled registers grouped into as few contiguous reads as is worth it; only
        registers read on the same polls share a read."""
        groups: dict[tuple[str, int], list[tuple[str, Register]]] = {}
        for name in self.poll:
            register = self.registers[name]
            every = self.poll_every.get(name, 1)
            groups.setdefault((register.function, every), []).append((name, register))
        blocks: list[Block] = []
        for (function, every), members in groups.items():
            members.sort(key=lambda item: item[1].address)
            current: Block | None = None
            for name, register in members:
                end = register.address + register.width
                if (
                    current is not None
                    and register.address - current.end <= MERGE_GAP_REGISTERS
                    and end - current.start <= MAX_REGISTERS_PER_READ
                ):
                    current.members.append(name)
                    current.end = max(current.end, end)
                    continue
                current = Block(function, register.address, end, [name], every)
                blocks.append(current)
        return blocks


class Block:
    """A contiguous span of registers read in one transaction, on every `every`-th poll."""

    def __init__(self, function: str, start: int, end: int, members: list[str],
                 every: int = 1) -> None:
        self.function = function
        self.start = start
        self.end = end
        self.members = members
        self.every = every

    def due(self, poll_index: int) -> bool:
        """Is the block read on this poll (the first poll, index 0, reads every block)?"""
        return poll_index % self.every == 0

    @property
    def count(self) -> int:
        return self.end - self.start

    def __repr__(self) -> str:
        return (f"Block({self.function}, {self.start}..{self.end - 1}, {self.members}, "
                f"every {self.every})")


def available_profiles() -> list[str]:
    return sorted(path.stem for path in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str) -> Profile:
    """Load a shipped profile by name, or any profile file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = PROFILE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise FileNotFoundError(
            f"unknown profile '{name_or_path}' (shipped: {', '.join(available_profiles())})"
        )
    with path.open("rb") as handle:
        return Profile.model_validate(tomllib.load(handle))
