"""NMEA 0183 stream decoding: bytes in, validated sentences out, every rejected line counted.

Real receiver streams contain partial lines, binary junk (UBX/RTCM frames interleaved
on the same port), comment lines in captures, and sentences whose checksum is fine but
whose fields are not numbers. None of these may crash a reader; each is counted so
that a bad cable or a misconfigured receiver shows up in the figures.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pynmea2

MAX_SENTENCE = 255  # NMEA says 82; proprietary and long GSV/GNS lines run longer
TALKERS = {"GP", "GN", "GL", "GA", "BD", "GB", "GQ", "GI", "II", "WI"}


@dataclass(frozen=True, slots=True)
class Sentence:
    """A checksum-valid sentence, with the host stamps taken when its line ended."""

    message: pynmea2.NMEASentence
    raw: str
    t_ns: int
    mono_ns: int

    @property
    def kind(self) -> str:
        return str(self.message.sentence_type)


class LineSplitter:
    """Splits a byte stream into text lines on CR, LF or CRLF; drops what cannot be text."""

    def __init__(self, stats: Counter[str]) -> None:
        self.stats = stats
        self.pending = bytearray()

    def feed(self, data: bytes) -> Iterator[str]:
        self.pending.extend(data)
        while True:
            cut = min((i for i in (self.pending.find(b"\r"), self.pending.find(b"\n"))
                       if i >= 0), default=-1)
            if cut < 0:
                if len(self.pending) > 4 * MAX_SENTENCE:  # no line end in sight: junk
                    self.stats["junk_bytes"] += len(self.pending)
                    self.pending.clear()
                return
            chunk = bytes(self.pending[:cut])
            del self.pending[: cut + 1]
            if chunk:
                line = self._clean(chunk)
                if line:
                    yield line

    def _clean(self, chunk: bytes) -> str:
        """Keep from the last '$' or '!' on; bytes before it are junk (binary frames)."""
        start = max(chunk.rfind(b"$"), chunk.rfind(b"!"))
        if chunk.startswith(b"#"):
            self.stats["comments"] += 1
            return ""
        if start < 0:
            self.stats["junk_bytes"] += len(chunk)
            return ""
        if start > 0:
            self.stats["junk_bytes"] += start
        try:
            return chunk[start:].decode("ascii")
        except UnicodeDecodeError:
            self.stats["junk_bytes"] += len(chunk) - start
            return ""


class NmeaDecoder:
    """Turns raw bytes into checksum-valid pynmea2 sentences and counts the rest."""

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()
        self._splitter = LineSplitter(self.stats)

    def feed(self, data: bytes, t_ns: int, mono_ns: int) -> Iterator[Sentence]:
        for line in self._splitter.feed(data):
            sentence = self.parse_line(line, t_ns, mono_ns)
            if sentence is not None:
                yield sentence

    def flush(self) -> None:
        """At the end of a file: a last line without its line end is truncated; count it."""
        if self._splitter.pending:
            self.stats["truncated"] += 1
            self._splitter.pending = bytearray()

    def parse_line(self, line: str, t_ns: int, mono_ns: int) -> Sentence | None:
        if len(line) > MAX_SENTENCE:
            self.stats["too_long"] += 1
            return None
        if "*" not in line:
            # pynmea2 accepts a missing checksum; we do not (a truncated line looks so).
            self.stats["no_checksum"] += 1
            return None
        try:
            message = pynmea2.parse(line, check=True)
        except pynmea2.ChecksumError:
            self.stats["bad_checksum"] += 1
            return None
        except pynmea2.ParseError:
            self.stats["malformed"] += 1
            return None
        self.stats["sentences"] += 1
        return Sentence(message, line, t_ns, mono_ns)


class FieldError(ValueError):
    """A sentence whose checksum is valid but whose fields are not usable."""


def number_field(
    message: pynmea2.NMEASentence, field: str, *, optional: bool = False
) -> float | None:
    """A field as a float; an empty field is None if optional, else a FieldError."""
    raw = getattr(message, field, None)
    if raw in (None, ""):
        if optional:
            return None
        raise FieldError(f"{message.sentence_type}: field '{field}' is empty")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise FieldError(f"{message.sentence_type}: field '{field}' = {raw!r} is not a number")
    return value
