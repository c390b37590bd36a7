"""A profile's register map seen from the slave side: addresses to named values and back.

Values are encoded with the profile's own codec (drivers.profile.Register), the one
the driver uses; the encoding is checked independently by reading the simulator with
Debian's mbpoll (tests/test_simulator.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from pymodbus.constants import ExcCodes

from drivers.profile import INTEGER_LIMITS, MERGE_GAP_REGISTERS, Profile, Register


class RegisterBank:
    """Which addresses a device answers, and how its named values map onto words."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._cells: dict[str, dict[int, tuple[str, int]]] = {"holding": {}, "input": {}}
        for name, register in profile.registers.items():
            cells = self._cells[register.function]
            for index in range(register.width):
                address = register.address + index
                if address in cells:
                    raise ValueError(
                        f"profile '{profile.name}': registers '{cells[address][0]}' and "
                        f"'{name}' overlap at address {address}"
                    )
                cells[address] = (name, index)
        self._readable = {table: self._with_small_gaps(cells) for table, cells in
                          self._cells.items()}
        self._actions = {
            (action.address, tuple(action.values)): name
            for name, action in profile.actions.items()
        }

    @staticmethod
    def _with_small_gaps(cells: Mapping[int, object]) -> set[int]:
        """Mapped addresses plus the short gaps a driver may read through (poll_blocks)."""
        readable = set(cells)
        ordered = sorted(cells)
        for low, high in itertools.pairwise(ordered):
            if high - low - 1 <= MERGE_GAP_REGISTERS:
                readable.update(range(low + 1, high))
        return readable

    def read(
        self, table: str, address: int, count: int, values: Mapping[str, float]
    ) -> list[int] | ExcCodes:
        """Words for a read request, zeros in gaps; ILLEGAL_ADDRESS outside the map."""
        readable = self._readable[table]
        span = range(address, address + count)
        if not all(a in readable for a in span):
            return ExcCodes.ILLEGAL_ADDRESS
        cells = self._cells[table]
        encoded: dict[str, list[int]] = {}
        words = []
        for a in span:
            if (cell := cells.get(a)) is None:
                words.append(0)
                continue
            name, index = cell
            if name not in encoded:
                encoded[name] = self.encode(self.profile.registers[name], values[name])
            words.append(encoded[name][index])
        return words

    def action(self, address: int, words: Sequence[int]) -> str | None:
        """The profile action a write performs, if it is exactly one."""
        return self._actions.get((address, tuple(words)))

    def is_action_address(self, address: int) -> bool:
        return any(address == action_address for action_address, _ in self._actions)

    def decode_write(self, address: int, words: Sequence[int]) -> dict[str, float] | ExcCodes:
        """The values a write sets; it must cover whole writable holding registers only."""
        cells = self._cells["holding"]
        written: dict[str, float] = {}
        offset = 0
        while offset < len(words):
            cell = cells.get(address + offset)
            if cell is None or cell[1] != 0:
                return ExcCodes.ILLEGAL_ADDRESS
            name = cell[0]
            register = self.profile.registers[name]
            if not register.writable or offset + register.width > len(words):
                return ExcCodes.ILLEGAL_ADDRESS
            written[name] = self.decode(register, words[offset : offset + register.width])
            offset += register.width
        return written

    def encode(self, register: Register, value: float) -> list[int]:
        if register.type in INTEGER_LIMITS:  # firmware saturates integer registers
            low, high = INTEGER_LIMITS[register.type]
            value = min(max(value, low * register.scale), high * register.scale)
        return register.encode(value, self.profile.word_order)

    def decode(self, register: Register, words: Sequence[int]) -> float:
        return register.decode(words, self.profile.word_order)
