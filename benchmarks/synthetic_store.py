"""Builds the run store of a synthetic test day (see synthetic_day.py for the day and
synthetic_signals.py for its samples): the schema by opening a `Store` once, then every
row bulk-inserted with plain sqlite3, samples in one transaction per step.

The rows are made by the daemon's own code wherever it has one: the run and step rows by
`run_row`, `step_row` and `ended_step_row`, each truth by `compute_truth` from the very
flow samples written, P1's positions by the release-point survey fed the written GNSS
fixes, every DUT report by the live intake's validation (`validate_report`, `report_row`).
Events and their outbox messages carry what the components emit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from synthetic_day import NS, P1_ANTENNA, Day, StepTimes, plan_day, write_station
from synthetic_signals import Batch, DaySignals, Fixes, fault_detail

from acquisition import __version__
from acquisition.config.station import config_hash
from acquisition.dut.report import report_row, validate_report
from acquisition.geodesy import offset_to_degrees
from acquisition.mqtt.client import Topics
from acquisition.mqtt.dut_intake import live_import_key, report_event
from acquisition.run.records import ended_step_row, run_row, step_row
from acquisition.run.truth import compute_truth
from acquisition.site.positions import PointPosition, ReleasePoints
from acquisition.store.store import Store
from drivers.gnss import FIX_QUALITY, Fix
from simulators.dut import iso_utc

DUT_ID = "d1"
DUT_BIAS = 0.05  # the DUT over-reads by 5 %, misses 3 % of releases, places them 2 m off
DUT_MISS = 0.03
DUT_FALSE_ALARM = 0.04
DUT_LOCALIZATION_M = 2.0
PUBLISH_DELAY_NS = 20_000_000  # from an event to the broker's acknowledgement


@dataclass(frozen=True)
class BuildFigures:
    seconds: float
    rows: dict[str, int]
    bytes: int
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "rows": self.rows, "bytes": self.bytes,
                "run_id": self.run_id}


@dataclass(frozen=True)
class FixedClock:
    offset_s: float  # GNSS minus host clock, as the clock monitor reports it


@dataclass
class DaySite:
    """What `run_row` and `step_row` read of the daemon's `Site`: the release points'
    positions (the real survey, fed the day's fixes), their row ids, the clock. Position
    rows are recorded as the site's watch does: a surveyed point at start-up, a GNSS one
    once its survey has enough fixes, then every survey window."""

    points: ReleasePoints
    clock: FixedClock
    position_ids: dict[str, int] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    next_watch_ns: int = 0  # the watch's next one-second tick
    _recorded_ns: dict[str, int] = field(default_factory=dict)

    def position(self, point: str) -> PointPosition | None:
        return self.points.position(point)

    def record_due(self, t_ns: int, events: EventLog) -> None:
        for point, config in self.points.points.items():
            last = self._recorded_ns.get(point)
            if last is not None and (config.survey is None
                                     or t_ns - last < config.survey.window_s * NS):
                continue
            position = self.points.position(point)
            if position is None:
                continue
            self.rows.append(position.to_dict() | {"id": len(self.rows) + 1, "t_ns": t_ns})
            self.position_ids[point] = len(self.rows)
            self._recorded_ns[point] = t_ns
            if last is None:
                events.add(t_ns + 1_000_000, "position.established", position.to_dict())

    def feed(self, receiver: str, fixes: Fixes, events: EventLog) -> None:
        """The fixes in time order, the watch ticking every second between them."""
        for t_ns, lat, lon, alt, sats, hdop in zip(
                fixes.t_ns.tolist(), fixes.lat.tolist(), fixes.lon.tolist(),
                fixes.alt.tolist(), fixes.sats.tolist(), fixes.hdop.tolist(), strict=True):
            while self.next_watch_ns <= t_ns:
                self.record_due(self.next_watch_ns, events)
                self.next_watch_ns += NS
            utc = dt.datetime.fromtimestamp(t_ns // NS, dt.UTC)
            self.points.on_fix(receiver, Fix(t_ns, utc.time().isoformat(), utc.isoformat(),
                                             lat, lon, alt, 4, FIX_QUALITY[4], int(sats), hdop,
                                             "GN"))


@dataclass
class EventLog:
    """Events as the daemon writes them, and the outbox messages of the run's events."""

    topics: Topics
    rows: list[tuple[str | None, int, str, dict[str, Any]]] = field(default_factory=list)

    def add(self, t_ns: int, kind: str, detail: dict[str, Any], run_id: str | None = None
            ) -> None:
        self.rows.append((run_id, t_ns, kind, detail))

    def write(self, db: sqlite3.Connection) -> None:
        self.rows.sort(key=lambda row: row[1])
        db.executemany("INSERT INTO events (run_id, t_ns, kind, detail) VALUES (?, ?, ?, ?)",
                       [(run_id, t_ns, kind, _json(detail))
                        for run_id, t_ns, kind, detail in self.rows])
        messages = [(run_id, t_ns, kind, detail) for run_id, t_ns, kind, detail in self.rows
                    if run_id is not None]
        db.executemany(
            "INSERT INTO outbox (seq, topic, payload, qos, created_ns, sent_ns)"
            " VALUES (?, ?, ?, 1, ?, ?)",
            [(seq, self.topics.run_step(run_id) if kind == "step.result"
              else self.topics.run_event(run_id),
              _json({"seq": seq, "run_id": run_id, "t_ns": t_ns, "kind": kind,
                     "detail": detail}), t_ns, t_ns + PUBLISH_DELAY_NS)
             for seq, (run_id, t_ns, kind, detail) in enumerate(messages, start=1)])


def _json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)


def _insert(db: sqlite3.Connection, table: str, rows: list[dict[str, Any]]) -> None:
    """Rows as dicts; a column some lack (a step without truth) is NULL in those."""
    columns = list(dict.fromkeys(column for row in rows for column in row))
    db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                   f"({', '.join('?' for _ in columns)})",
                   [[row.get(column) for column in columns] for row in rows])


def _write_samples(db: sqlite3.Connection, run_id: str, batch: Batch, end_ns: int) -> int:
    """The batch's samples stamped up to the run's end (later ones are no run's)."""
    t_ns, channel, value, problem = batch.arrays()
    kept = t_ns <= end_ns
    t_ns, channel, value, problem = t_ns[kept], channel[kept], value[kept], problem[kept]
    values: list[float | None] = value.tolist()
    qualities = ["ok"] * len(values)
    details: list[str | None] = [None] * len(values)
    for index in np.flatnonzero(problem >= 0).tolist():
        values[index] = None
        qualities[index], details[index] = batch.problems[problem[index]]
    db.executemany("INSERT INTO samples (run_id, t_ns, channel_id, value, quality, detail)"
                   " VALUES (?, ?, ?, ?, ?, ?)",
                   zip(itertools.repeat(run_id), t_ns.tolist(), channel.tolist(), values,
                       qualities, details))
    return len(values)


class DayWriter:
    """Walks the day step by step: writes each step's samples, keeps its rows and events."""

    def __init__(self, day: Day, db: sqlite3.Connection, seed: int) -> None:
        self.day = day
        self.db = db
        self.config = day.config
        self.signals = DaySignals(day, seed)
        self.rng = np.random.default_rng([seed, 2])
        self.events = EventLog(Topics(day.config.station))
        self.site = DaySite(ReleasePoints(day.config.release_points), FixedClock(-0.055))
        self.steps: list[dict[str, Any]] = []
        self.run_row: dict[str, Any] = {}
        self.samples = 0

    def before_run(self) -> None:
        """The daemon's start: made safe, surveyed points recorded, P1 surveyed from GNSS."""
        config, t_ns = self.config, self.day.daemon_start_ns
        self.events.add(t_ns, "daemon.start", {
            "station": config.station, "software": __version__,
            "config_hash": config_hash(config)})
        self.events.add(t_ns + 2_000_000, "safety.zeroed", {
            "why": "start-up", "devices": sorted([*config.mfcs, *config.valves]),
            "unconfirmed": {}})
        self.site.record_due(t_ns + 3_000_000, self.events)
        self.site.next_watch_ns = t_ns + NS
        unrecorded = Batch({})  # before the run: the survey's fixes, no samples kept
        self.site.feed("rx_p1", self.signals.gnss(unrecorded, t_ns, self.day.start_ns),
                       self.events)

    def run(self) -> None:
        """The run's row and its start, then each step: its samples, rows and events."""
        day, run_id = self.day, self.day.run_id
        self.run_row = run_row(self.config, self.site, run_id,  # type: ignore[arg-type]
                               day.plan, "bench", f"{DUT_ID} (synthetic LiDAR)")
        self.events.add(day.start_ns + 1_000_000, "run.state", {
            "state": "idle", "sequence": day.plan.spec.name, "steps": len(day.steps),
            "seed": day.plan.seed, "operator": "bench"}, run_id)
        starts = [day.start_ns] + [times.arm_ns for times in day.steps[1:]]
        ends = [*starts[1:], day.end_ns + 1]
        for times, start_ns, end_ns in zip(day.steps, starts, ends, strict=True):
            step = day.plan.steps[times.index]
            armed = step_row(run_id, step, times.assignment, self.site)  # type: ignore[arg-type]
            armed["t_start_ns"] = times.arm_ns
            batch, fixes = self.signals.slice(start_ns, end_ns)
            self.db.execute("BEGIN")
            self.samples += _write_samples(self.db, run_id, batch, day.end_ns)
            self.db.execute("COMMIT")
            self.site.feed("rx_p1", fixes, self.events)
            self._end_step(times, armed, batch)
        self._end_run()

    def _end_step(self, times: StepTimes, armed: dict[str, Any], batch: Batch) -> None:
        config, run_id = self.config, self.day.run_id
        step = self.day.plan.steps[times.index]
        mfc = times.assignment.mfc
        unit = self.signals.profiles[mfc].flow_unit
        where = {"step": step.index, "point": step.point}
        self.events.add(times.arm_ns + 1_000_000, "run.state", {
            "state": "arming", "mfc": mfc, "setpoint": times.assignment.setpoint,
            "unit": unit} | where, run_id)
        self.events.add(times.settle_ns, "run.state", {"state": "settling"} | where, run_id)
        truth, flags = None, [*times.assignment.qc_flags]
        if times.hold_ns is None:
            flags.append("settle_timeout")
        else:
            self.events.add(times.hold_ns, "run.state", {"state": "holding"} | where, run_id)
            readings = batch.good_values((mfc, "flow", unit), times.hold_ns, times.end_ns)
            truth = compute_truth(readings, config.mfcs[mfc], config.conversion(mfc),
                                  config.gas, unit)
        if armed["position_id"] is None and not step.blank:
            flags.append("position_unknown")
        ended = ended_step_row(armed, flags, truth,
                               None if times.stable_ns is None else time.monotonic_ns())
        self.steps.append(ended | {"t_end_ns": times.end_ns, "t_stable_ns": times.stable_ns})
        self.events.add(times.end_ns, "step.result", where | {
            "target_kg_h": step.target_kg_h,
            "truth_kg_h": truth.mean_kg_h if truth else None,
            "u_expanded_kg_h": truth.expanded_kg_h if truth else None,
            "qc_flags": flags, "note": None if truth else "did not settle"}, run_id)

    def _end_run(self) -> None:
        day, run_id = self.day, self.day.run_id
        touched = {times.assignment.mfc for times in day.steps} | {
            day.config.release_points[step.point].valve for step in day.plan.steps}
        self.events.add(day.end_ns - 1_000_000, "safety.zeroed", {
            "why": "run completed", "devices": sorted(name for name in touched if name),
            "unconfirmed": {}}, run_id)
        self.events.add(day.end_ns + 1_000_000, "run.state",
                        {"state": "completed", "reason": None}, run_id)
        for fault in day.faults:
            block = self.signals.profiles[fault.device].poll_blocks()[0]
            self.events.add(fault.start_ns, "device.fault", {
                "device": fault.device, "quality": fault.quality.value,
                "detail": fault_detail(day.config, fault, block)})
            self.events.add(fault.end_ns, "device.recovered",
                            {"device": fault.device, "was": fault.quality.value})

    def dut_reports(self) -> list[dict[str, Any]]:
        """The DUT's window reports, as the live intake stores them."""
        day, rng, species = self.day, self.rng, self.config.gas.species
        rows = []
        for start_ns, end_ns in day.dut_windows():
            grid = np.arange(start_ns, end_ns, NS, dtype=np.int64)
            rates = {point: float(day.release_kg_h(point, grid).mean())
                     for point in day.config.release_points}
            point, truth = max(rates.items(), key=lambda item: item[1])
            detected = bool(rng.random() >= DUT_MISS if truth > 0.005
                            else rng.random() < DUT_FALSE_ALARM)
            message: dict[str, Any] = {
                "dut_id": DUT_ID, "window_start": iso_utc(start_ns),
                "window_end": iso_utc(end_ns), "rate": 0.0, "unit": "kg/h", "lat": None,
                "lon": None, "u_rate": None, "detected": detected}
            if detected:
                rate = max(truth, 0.02) * (1 + DUT_BIAS) * (1 + rng.normal(0, 0.03))
                message |= {"rate": max(rate, 0.0), "u_rate": 0.05 * rate,
                            **self._misplaced(point)}
            payload = json.dumps(message)
            report = validate_report(payload, DUT_ID, species)
            received_ns = end_ns + int(rng.uniform(0.5, 2.0) * NS)
            rows.append(report_row(report, day.run_id, received_ns, "mqtt", payload)
                        | {"import_key": live_import_key(DUT_ID, payload.encode())})
            self.events.add(received_ns + 1_000_000, "dut.report", report_event(report),
                            day.run_id)
        return rows

    def _misplaced(self, point: str) -> dict[str, float]:
        position = self.site.position(point)
        lat, lon = (position.latitude, position.longitude) if position else P1_ANTENNA[:2]
        heading = self.rng.uniform(0, 2 * np.pi)
        d_lat, d_lon = offset_to_degrees(lat, DUT_LOCALIZATION_M * np.cos(heading),
                                         DUT_LOCALIZATION_M * np.sin(heading))
        return {"lat": lat + d_lat, "lon": lon + d_lon}


async def _create_schema(path: Path) -> None:
    store = Store(path)
    await store.open()
    await store.close()


def build_store(folder: Path, hours: float, seed: int) -> BuildFigures:
    """The station file and run store of a `hours`-long day in `folder`; the figures."""
    started = time.perf_counter()
    config = write_station(folder, hours)
    day = plan_day(config, hours, seed)
    path = config.storage.path
    asyncio.run(_create_schema(path))
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")  # the build only: a crash means a rebuild
        db.execute("PRAGMA cache_size=-262144")
        writer = DayWriter(day, db, seed)
        writer.before_run()
        writer.run()
        reports = writer.dut_reports()
        db.execute("BEGIN")
        _write_rows(db, day, writer, reports)
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("samples", "channels", "steps", "point_positions", "events",
                              "outbox", "dut_reports", "runs")}
    finally:
        db.close()
    return BuildFigures(time.perf_counter() - started, rows, path.stat().st_size, day.run_id)


def _write_rows(db: sqlite3.Connection, day: Day, writer: DayWriter,
                reports: list[dict[str, Any]]) -> None:
    """Everything but the samples: channels, the run, its steps, positions, reports,
    events and outbox."""
    db.executemany("INSERT INTO channels (id, device, channel, unit) VALUES (?, ?, ?, ?)",
                   [(channel_id, *key) for key, channel_id
                    in writer.signals.channel_ids.items()])
    _insert(db, "runs", [writer.run_row | {"t_start_ns": day.start_ns, "t_end_ns": day.end_ns,
                                "status": "completed"}])
    _insert(db, "point_positions", [
        {"id": row["id"], "point": row["point"], "t_ns": row["t_ns"],
         "latitude": row["latitude"], "longitude": row["longitude"],
         "altitude_m": row["altitude_m"], "h_spread_m": row["horizontal_spread_m"],
         "v_spread_m": row["vertical_spread_m"], "n_fixes": row["n_fixes"],
         "source": row["source"], "min_quality": row["min_quality"]}
        for row in writer.site.rows])
    _insert(db, "steps", writer.steps)
    _insert(db, "dut_reports", reports)
    writer.events.write(db)
