"""Damage to a talking device's output, as bad cables and chatty firmware cause it.

A corrupted sentence keeps its shape but carries a wrong checksum (a flipped bit on
the wire); junk is a binary UBX frame between two sentences, as a u-blox receiver
interleaves when both protocols are enabled on one port.
"""

from __future__ import annotations

import numpy as np

JUNK_CHANCE = 0.5  # of an epoch carrying one binary frame
UBX_NAV_PVT = (0x01, 0x07, 92)  # class, id, payload length


def wrong_checksum(line: bytes, rng: np.random.Generator) -> bytes:
    """The same sentence with a checksum that is certainly wrong."""
    star = line.rindex(b"*")
    right = int(line[star + 1 : star + 3], 16)
    wrong = right ^ int(rng.integers(1, 256))
    return line[: star + 1] + f"{wrong:02X}".encode() + line[star + 3 :]


def ubx_frame(rng: np.random.Generator) -> bytes:
    """A well-formed UBX NAV-PVT frame with a random payload (Fletcher-8 checksum)."""
    cls, ident, length = UBX_NAV_PVT
    body = bytes([cls, ident, length & 0xFF, length >> 8]) + rng.bytes(length)
    a = b = 0
    for byte in body:
        a = (a + byte) & 0xFF
        b = (b + a) & 0xFF
    return b"\xb5\x62" + body + bytes([a, b])


class LineFaults:
    """Corrupts a fraction of sentences and, if `junk`, slips binary frames in between."""

    def __init__(self, rng: np.random.Generator, corrupt_fraction: float = 0.0,
                 junk: bool = False) -> None:
        self.rng = rng
        self.corrupt_fraction = corrupt_fraction
        self.junk = junk

    def apply(self, lines: list[bytes]) -> tuple[bytes, int]:
        """One epoch's bytes on the wire, and how many sentences went out corrupted."""
        out = []
        corrupted = 0
        for line in lines:
            if self.corrupt_fraction and self.rng.random() < self.corrupt_fraction:
                line = wrong_checksum(line, self.rng)
                corrupted += 1
            out.append(line)
        if self.junk and out and self.rng.random() < JUNK_CHANCE:
            out.insert(int(self.rng.integers(0, len(out) + 1)), ubx_frame(self.rng))
        return b"".join(out), corrupted
