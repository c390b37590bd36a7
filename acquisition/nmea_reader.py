"""Reads one NMEA device (GNSS receiver or weather station) into the sample bus.

Bytes come from drivers.stream (reconnecting), sentences from drivers.nmea (counted
rejects), samples from the device's interpreter. Listeners get every GNSS fix, so the
release-point surveys, the clock monitor and the interlocks all see the same data.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from acquisition.bus import SampleBus
from drivers.gnss import Fix, GnssInterpreter
from drivers.met import MetInterpreter
from drivers.nmea import NmeaDecoder, Sentence
from drivers.sample import Sample, now_stamps
from drivers.stream import StreamSettings, stream_chunks

log = structlog.get_logger(__name__)


class Interpreter(Protocol):
    last_error: str | None

    def interpret(self, sentence: Sentence) -> tuple[list[Sample], Any]: ...


class NmeaReader:
    """One streaming NMEA device: decode, interpret, publish, tell the fix listeners."""

    def __init__(self, name: str, settings: StreamSettings, bus: SampleBus,
                 interpreter: Interpreter, decoder: NmeaDecoder) -> None:
        self.name = name
        self.settings = settings
        self.bus = bus
        self.decoder = decoder
        self.interpreter = interpreter
        self.fix_listeners: list[Callable[[str, Fix], None]] = []
        self.connected = False
        self.stopping = False

    @property
    def stats(self) -> Counter[str]:
        return self.decoder.stats

    def _on_state(self, up: bool, reason: str) -> None:
        self.connected = up

    async def run(self) -> None:
        chunks = stream_chunks(self.name, self.settings, self._on_state)
        try:
            async for chunk in chunks:
                if self.stopping:
                    break
                self.feed(chunk)
                await asyncio.sleep(0)  # a fast file replay must not starve the loop
            self.decoder.flush()  # only a file ends: count a last line cut short
        finally:
            await chunks.aclose()

    def feed(self, chunk: bytes) -> None:
        """Decode one chunk of bytes and publish what it held."""
        t_ns, mono_ns = now_stamps()
        batch: list[Sample] = []
        for sentence in self.decoder.feed(chunk, t_ns, mono_ns):
            samples, fix = self.interpreter.interpret(sentence)
            batch += samples
            if isinstance(fix, Fix):
                for listener in self.fix_listeners:
                    listener(self.name, fix)
        self.bus.publish(batch)


def gnss_reader(name: str, settings: StreamSettings, bus: SampleBus) -> NmeaReader:
    decoder = NmeaDecoder()
    return NmeaReader(name, settings, bus, GnssInterpreter(name, decoder.stats), decoder)


def met_reader(name: str, settings: StreamSettings, bus: SampleBus) -> NmeaReader:
    decoder = NmeaDecoder()
    return NmeaReader(name, settings, bus, MetInterpreter(name, decoder.stats), decoder)
