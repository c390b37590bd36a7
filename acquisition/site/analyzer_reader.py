"""Reads one gas analyzer's text stream into the sample bus.

Bytes come from drivers.stream (reconnecting; a capture file is read once), lines from
drivers.analyzer, which counts every line it cannot use by kind. The samples go on the
bus like any device's, so they are recorded in the run and sent as MQTT telemetry.

Nothing an analyzer sends may stop its reader: a rejected line is counted and logged at
most once per LOG_EVERY_S for each kind of rejection, and so is a parser failure nobody
foresaw (`internal_error`, with its traceback).
"""

from __future__ import annotations

from typing import Any

import structlog

from acquisition.config.tables import TextAnalyzerConfig
from acquisition.samples.bus import SampleBus
from acquisition.site.stream_reader import LOGGED_CHARS, StreamReader
from drivers.analyzer import AnalyzerDecoder, LineError
from drivers.sample import Sample, now_stamps

log = structlog.get_logger(__name__)


class AnalyzerReader(StreamReader[AnalyzerDecoder]):
    """One streaming analyzer: split, parse, publish; its figures for the daemon's health."""

    def __init__(self, name: str, settings: TextAnalyzerConfig, bus: SampleBus) -> None:
        super().__init__(name, settings, bus, AnalyzerDecoder(name, settings))

    def health(self) -> dict[str, Any]:
        """JSON-ready: `lines` that gave samples, `rejected` by kind (as drivers.analyzer
        counts them; `junk_bytes` counts bytes), and why the last rejected line was."""
        stats = self.decoder.stats
        return {
            "connected": self.connected,
            "reconnects": self.reconnects,
            "lines": stats["lines"],
            "rejected": {kind: count for kind, count in sorted(stats.items())
                         if kind != "lines"},
            "last_error": self.decoder.last_error,
        }

    def feed(self, chunk: bytes) -> None:
        """Parse the lines a chunk completes and publish their samples as one batch."""
        t_ns, mono_ns = now_stamps()
        batch: list[Sample] = []
        for line in self.decoder.lines(chunk):
            try:
                batch += self.decoder.decode(line, t_ns, mono_ns)
            except LineError as error:  # counted by the decoder
                self._rejected(error.kind, error, line, mono_ns)
            except Exception as error:  # a bug meeting unforeseen input must not stop us
                self.decoder.stats["internal_error"] += 1
                self.decoder.last_error = f"internal_error: {type(error).__name__}: {error}"
                self._rejected("internal_error", error, line, mono_ns)
        self.bus.publish(batch)

    def _rejected(self, kind: str, error: Exception, line: bytes, mono_ns: int) -> None:
        unlogged = self._log_due(kind, mono_ns)
        if unlogged is None:
            return
        bug = {"exc_info": error} if kind == "internal_error" else {}
        log.warning("analyzer line rejected", device=self.name, kind=kind,
                    error=str(error)[:LOGGED_CHARS], line=repr(line[:LOGGED_CHARS]),
                    not_logged_before=unlogged, **bug)
