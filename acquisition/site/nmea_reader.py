"""Reads one NMEA device (GNSS receiver or weather station) into the sample bus.

Bytes come from drivers.stream (reconnecting), sentences from drivers.nmea (counted
rejects), samples from the device's interpreter. Fix listeners (the release-point
surveys) get every GNSS fix as it is decoded; the clock monitor and the interlocks read
the interpreter's latest clock offset and fix.

Nothing a device sends may stop its reader: a sentence whose interpretation raises (a
bug meeting input nobody foresaw) is counted as `interpret_error`, logged at most once
per LOG_EVERY_S for each kind of failure, and reading goes on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from acquisition.samples.bus import SampleBus
from acquisition.site.stream_reader import LOGGED_CHARS, StreamReader
from drivers.gnss import Fix, GnssInterpreter
from drivers.met import MetInterpreter
from drivers.nmea import NmeaDecoder, Sentence
from drivers.sample import Sample, now_stamps
from drivers.stream import StreamSettings

log = structlog.get_logger(__name__)


class Interpreter(Protocol):
    """A device's sentence interpreter. `last_error` says why the last unusable sentence
    was not used: its own field checks, or (set by the reader) an exception it raised."""

    last_error: str | None

    def interpret(self, sentence: Sentence) -> tuple[list[Sample], Any]: ...


class NmeaReader(StreamReader[NmeaDecoder]):
    """One streaming NMEA device: decode, interpret, publish, tell the fix listeners."""

    def __init__(self, name: str, settings: StreamSettings, bus: SampleBus,
                 interpreter: Interpreter, decoder: NmeaDecoder) -> None:
        super().__init__(name, settings, bus, decoder)
        self.interpreter = interpreter
        self.fix_listeners: list[Callable[[str, Fix], None]] = []

    @property
    def stats(self) -> Counter[str]:
        return self.decoder.stats

    def health(self) -> dict[str, Any]:
        """The reader's figures, JSON-ready. `rejected` holds the decoder's counts by kind
        (as in drivers.nmea; `junk_bytes` counts bytes) but for the two shown on their own."""
        stats = self.decoder.stats
        return {
            "connected": self.connected,
            "reconnects": self.reconnects,
            "sentences": stats["sentences"],
            "rejected": {kind: count for kind, count in sorted(stats.items())
                         if kind not in ("sentences", "interpret_error")},
            "interpret_errors": stats["interpret_error"],
            "last_error": self.interpreter.last_error,
        }

    def feed(self, chunk: bytes) -> None:
        """Decode one chunk of bytes and publish what it held."""
        t_ns, mono_ns = now_stamps()
        batch: list[Sample] = []
        for sentence in self.decoder.feed(chunk, t_ns, mono_ns):
            try:
                samples, fix = self.interpreter.interpret(sentence)
                if isinstance(fix, Fix):  # surveys and interlocks see the fix at once
                    for listener in self.fix_listeners:
                        listener(self.name, fix)
            except Exception as error:  # what a device sends must never stop the reader
                self._interpret_failed(sentence, error)
                continue
            batch += samples
        self.bus.publish(batch)

    def _interpret_failed(self, sentence: Sentence, error: Exception) -> None:
        """Count the sentence and keep the error; log it unless this failure was just logged."""
        self.stats["interpret_error"] += 1
        failure = f"{sentence.kind}: {type(error).__name__}"
        self.interpreter.last_error = f"{failure}: {error}"[:LOGGED_CHARS]
        unlogged = self._log_due(failure, sentence.mono_ns)
        if unlogged is None:
            return
        log.error("sentence skipped: interpreting it failed", device=self.name, failure=failure,
                  error=str(error)[:LOGGED_CHARS], sentence=sentence.raw[:LOGGED_CHARS],
                  not_logged_before=unlogged, exc_info=error)


def gnss_reader(name: str, settings: StreamSettings, bus: SampleBus) -> NmeaReader:
    decoder = NmeaDecoder()
    return NmeaReader(name, settings, bus, GnssInterpreter(name, decoder.stats), decoder)


def met_reader(name: str, settings: StreamSettings, bus: SampleBus) -> NmeaReader:
    decoder = NmeaDecoder()
    return NmeaReader(name, settings, bus, MetInterpreter(name, decoder.stats), decoder)
