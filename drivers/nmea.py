"""NMEA 0183 stream decoding: bytes in, validated sentences out, every rejected line counted.

Real receiver streams contain partial lines, binary junk (UBX/RTCM frames interleaved
on the same port), proprietary sentences of every vendor, comment lines in captures,
and sentences whose checksum is fine but whose fields are not numbers. None of these
may crash a reader; each is counted so that a bad cable or a misconfigured receiver
shows up in the figures.

`NmeaDecoder.stats` counts lines under one key per reason, `reason:detail` where the
detail tells which sentence it was (the decoder's and the interpreter's counts share it):

- `sentences`: lines whose checksum holds, standard or proprietary. Those not used are
  also counted under one of:
  - `proprietary:<MMM>`: a `$P` sentence, by the three-letter manufacturer code after
    the P (UBX u-blox, MTK MediaTek, GRM Garmin, STI SkyTraq, QTM Quectel, STM ST,
    SRF SiRF...). The interpreters use none, so they are never handed one.
  - `unknown_type:<FFF>`: a standard sentence whose formatter pynmea2 does not know.
  - `ignored:<FFF>`: a known sentence the device's interpreter does not use (GSV,
    GLL, VTG, TXT...).
  - `malformed`: fields that are not what they should be (a letter for a number, a fix
    quality of 9), counted by the interpreter.
  - `query`: a query sentence (`$CCGPQ,GGA`): a request, not data.
- lines rejected before that: `too_long`, `no_checksum`, `bad_checksum`, `malformed`
  (no NMEA sentence structure at all), `comments` (`#` lines: capture annotations, or a
  receiver's own `#` ASCII log format on a live port) and `truncated` (a line cut short:
  a file's last line without its line end, or the line a stream was in when it went down);
- `junk_bytes`: a count of bytes, not lines: bytes outside any sentence (binary frames,
  NUL padding, noise) and lines holding bytes no sentence may hold (non-ASCII, control).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pynmea2

from drivers.lines import LineSplitter

MAX_SENTENCE = 255  # NMEA says 82; proprietary and long GSV/GNS lines run longer
SENTENCE_TEXT = re.compile(rb"[\x20-\x7e]+")  # NMEA 0183 sentences are printable ASCII


@dataclass(frozen=True, slots=True)
class Sentence:
    """A checksum-valid sentence, with the host stamps taken when its line ended."""

    message: pynmea2.NMEASentence
    raw: str
    t_ns: int
    mono_ns: int

    @property
    def kind(self) -> str:
        """The sentence type ("GGA", "RMC"...), "PUBX" for a proprietary one; never raises."""
        message = self.message
        if isinstance(message, pynmea2.ProprietarySentence):
            return f"P{message.manufacturer}"
        return str(getattr(message, "sentence_type", None) or type(message).__name__)


class NmeaDecoder:
    """Turns raw bytes into checksum-valid pynmea2 sentences and counts the rest."""

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()
        self._splitter = LineSplitter(self.stats, MAX_SENTENCE, resync=b"$")

    def feed(self, data: bytes, t_ns: int, mono_ns: int) -> Iterator[Sentence]:
        for chunk in self._splitter.feed(data):
            line = self._sentence_text(chunk)
            sentence = self.parse_line(line, t_ns, mono_ns) if line else None
            if sentence is not None:
                yield sentence

    def flush(self) -> None:
        """At the end of a file or a connection: a line without its line end is truncated."""
        self._splitter.flush()

    def _sentence_text(self, chunk: bytes) -> str:
        """Keep from the last '$' or '!' on; bytes before it are junk (binary frames)."""
        start = max(chunk.rfind(b"$"), chunk.rfind(b"!"))
        if start < 0:
            self.stats["junk_bytes"] += len(chunk)
            return ""
        if start:
            self.stats["junk_bytes"] += start
        if not SENTENCE_TEXT.fullmatch(chunk, start):
            self.stats["junk_bytes"] += len(chunk) - start
            return ""
        return chunk[start:].decode("ascii")

    def parse_line(self, line: str, t_ns: int, mono_ns: int) -> Sentence | None:
        """The standard sentence on a line, or None with the reason counted."""
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
        except pynmea2.SentenceTypeError:  # raised after the checksum passed
            self.stats["sentences"] += 1
            self.stats[f"unknown_type:{line[3:6].upper()}"] += 1
            return None
        except (pynmea2.ParseError, IndexError):
            # IndexError: pynmea2's u-blox, Ashtech and Trimble classes read fields that
            # a short proprietary sentence ("$PUBX*...") does not have.
            self.stats["malformed"] += 1
            return None
        self.stats["sentences"] += 1
        if isinstance(message, pynmea2.ProprietarySentence):
            self.stats[f"proprietary:{message.manufacturer}"] += 1
            return None
        if not isinstance(message, pynmea2.TalkerSentence):
            self.stats["query"] += 1
            return None
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
