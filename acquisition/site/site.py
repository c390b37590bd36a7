"""The site around the release: GNSS receivers, weather stations, gas analyzers, release
points, clock.

Owns the stream readers (NMEA devices, gas analyzers that print text), feeds the GNSS
fixes to the release-point surveys, records each point's position in the store when it
becomes known (and again every survey window for GNSS-surveyed points), and watches the
host clock against GNSS time.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from acquisition.config.station import StationConfig
from acquisition.config.tables import NmeaMetConfig, TextAnalyzerConfig
from acquisition.events import EventSink
from acquisition.samples.bus import SampleBus
from acquisition.site.analyzer_reader import AnalyzerReader
from acquisition.site.clock import ClockMonitor
from acquisition.site.nmea_reader import NmeaReader, gnss_reader, met_reader
from acquisition.site.positions import PointPosition, ReleasePoints
from acquisition.store.store import Store
from drivers.gnss import GnssInterpreter

log = structlog.get_logger(__name__)

WATCH_PERIOD_S = 1.0


class Site:
    """Readers, surveys and clock of one station; `run_watch` keeps them recorded."""

    def __init__(self, config: StationConfig, bus: SampleBus, store: Store,
                 emit: EventSink) -> None:
        self.config = config
        self.store = store
        self.emit = emit
        self.gnss: dict[str, NmeaReader] = {
            name: gnss_reader(name, settings, bus) for name, settings in config.gnss.items()}
        self.met: dict[str, NmeaReader] = {
            name: met_reader(name, settings, bus) for name, settings in config.met.items()
            if isinstance(settings, NmeaMetConfig)}
        self.analyzers: dict[str, AnalyzerReader] = {
            name: AnalyzerReader(name, settings, bus)
            for name, settings in config.analyzers.items()
            if isinstance(settings, TextAnalyzerConfig)}
        self.release_points = ReleasePoints(config.release_points)
        for reader in self.gnss.values():
            reader.fix_listeners.append(self.release_points.on_fix)
        self.clock = self._clock_monitor()
        self.position_ids: dict[str, int] = {}  # latest recorded position row per point
        self._recorded_at: dict[str, float] = {}

    def _clock_monitor(self) -> ClockMonitor | None:
        reference = self.config.clock.reference or next(iter(self.gnss), None)
        if reference is None:
            return None
        interpreter = self.gnss[reference].interpreter
        assert isinstance(interpreter, GnssInterpreter)
        return ClockMonitor(reference, interpreter, self.config.clock.max_offset_s, self.emit)

    @property
    def readers(self) -> dict[str, NmeaReader | AnalyzerReader]:
        """Every stream reader by device name (names are unique across tables)."""
        return {**self.gnss, **self.met, **self.analyzers}

    def position(self, point: str) -> PointPosition | None:
        return self.release_points.position(point)

    async def run_watch(self) -> None:
        """Every second: check the clock and record positions that are new or due."""
        while True:
            if self.clock is not None:
                await self.clock.check()
            await self.record_positions()
            await asyncio.sleep(WATCH_PERIOD_S)

    async def record_positions(self) -> None:
        """Store every point's position that is new or due (surveyed ones: at once)."""
        for point in self.config.release_points:
            await self._record_position_if_due(point)

    async def _record_position_if_due(self, point: str) -> None:
        config = self.config.release_points[point]
        last = self._recorded_at.get(point)
        if last is not None and (config.survey is None
                                 or time.monotonic() - last < config.survey.window_s):
            return
        position = self.release_points.position(point)
        if position is None:
            return
        self.position_ids[point] = await self.store.add_position(position.to_dict())
        self._recorded_at[point] = time.monotonic()
        if last is None:
            log.info("release point located", **position.to_dict())
            await self.emit("position.established", position.to_dict())
