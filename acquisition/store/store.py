"""The SQLite run store: the system of record for samples, events, runs and steps.

All SQLite work runs on one dedicated thread, so the event loop never waits on a disk
commit and the connection is only ever used from one thread. WAL with synchronous=FULL:
a committed event survives a power cut; samples arrive in ~1 s batches to keep that cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

from drivers.sample import Sample

SCHEMA_VERSION = 2
DUT_REPORT_COLUMNS = ("id", "run_id", "dut_id", "source", "received_ns", "t_ns",
                      "window_start_ns", "window_end_ns", "rate", "unit", "rate_kg_h", "u_rate",
                      "lat", "lon", "detected", "raw", "import_key")
MIB = 1 << 20
T = TypeVar("T")


class StoreError(Exception):
    """The run store cannot be opened or written; the message names the file."""


class StoreFullError(StoreError):
    """The disk or the store's size cap is full: nothing more can be recorded."""


class DuplicateImportError(StoreError):
    """Reports carry import keys already in the store: that file was imported before."""


def _is_full(error: sqlite3.Error | OSError) -> bool:
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    return (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF == sqlite3.SQLITE_FULL


def read_only_uri(path: Path) -> str:
    """The SQLite URI that opens `path` read-only; a URI names the file percent-encoded,
    so any path will do."""
    return f"{path.resolve().as_uri()}?mode=ro"


def _version_problem(version: int) -> str:
    if version == 0:
        return "not a crf-daq run store (it has no schema version)"
    upgrade = (" (run `crf daemon` on it once to add the newer tables)"
               if version < SCHEMA_VERSION else "")
    return f"schema version {version}, this crf-daq reads {SCHEMA_VERSION}{upgrade}"


class Store:
    """Asynchronous facade over one SQLite file, serialized on a single worker thread.

    `max_size_mb` caps the database file (SQLite's max_page_count), so that a field
    computer's disk keeps room for everything else; reaching it is a StoreFullError.
    `read_only` opens an existing store for the tools that only read it: a calibration
    record keeps its bytes (and its checksum) however often it is listed or reported."""

    def __init__(self, path: Path, max_size_mb: int | None = None, *,
                 read_only: bool = False) -> None:
        self.path = path
        self.max_size_mb = max_size_mb
        self.read_only = read_only
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crf-store")
        self._db: sqlite3.Connection | None = None
        self._channel_ids: dict[tuple[str, str, str], int] = {}

    @property
    def is_open(self) -> bool:
        return self._db is not None

    async def open(self) -> None:
        await self._run(self._open)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._close)
        self._executor.shutdown(wait=True)

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._guarded, work, *args)

    # --- worker-thread side -------------------------------------------------------

    def _guarded(self, work: Callable[..., T], *args: Any) -> T:
        """Run `work`; a failure becomes one plain StoreError, without the sqlite chain."""
        try:
            return work(*args)
        except (sqlite3.Error, OSError) as error:
            if self._db is not None and self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the next write must not land
                    self._db.rollback()                   # in a half-done transaction
            reading = work in (self._query, self._cursor, self._fetch)
            doing = "read run store" if reading else "write run store"
            raise self._failure(error, doing) from None

    def _failure(self, error: sqlite3.Error | OSError, doing: str) -> StoreError:
        if _is_full(error):
            free = shutil.disk_usage(self.path.parent).free
            return StoreFullError(f"store full: {self.path}, {free} bytes free")
        return StoreError(f"{self.path}: cannot {doing}: {error}")

    def _open(self) -> None:
        if self.read_only:
            self._open_read_only()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            if self.max_size_mb is not None:
                page_size = db.execute("PRAGMA page_size").fetchone()[0]
                db.execute(f"PRAGMA max_page_count={self.max_size_mb * MIB // page_size}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            # Every version so far only added tables: an older store gains them below.
            if not 0 <= version <= SCHEMA_VERSION:
                raise StoreError(f"{self.path}: {_version_problem(version)}")
            db.executescript(files("acquisition.store").joinpath("schema.sql").read_text())
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (sqlite3.Error, OSError) as exc:
            raise self._failure(exc, "open run store") from None
        self._use(db)

    def _open_read_only(self) -> None:
        """Open without writing anything, not even the schema: a store older than this
        crf-daq lacks tables the reading tools query, so it is refused by name."""
        try:
            db = sqlite3.connect(read_only_uri(self.path), uri=True,
                                 isolation_level=None, check_same_thread=False)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                db.close()
                raise StoreError(f"{self.path}: {_version_problem(version)}")
            self._use(db)
        except sqlite3.Error as exc:
            raise self._failure(exc, "open run store (read-only)") from None

    def _use(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._channel_ids = {
            (device, channel, unit): channel_id
            for channel_id, device, channel, unit in db.execute(
                "SELECT id, device, channel, unit FROM channels"
            )
        }

    def _close(self) -> None:
        assert self._db is not None
        self._db.close()
        self._db = None

    def _channel_id(self, device: str, channel: str, unit: str) -> int:
        key = (device, channel, unit)
        if key not in self._channel_ids:
            assert self._db is not None
            cursor = self._db.execute(
                "INSERT INTO channels (device, channel, unit) VALUES (?, ?, ?)", key
            )
            self._channel_ids[key] = int(cursor.lastrowid or 0)
        return self._channel_ids[key]

    def _insert_samples(self, tagged: Sequence[tuple[Sample, str | None]]) -> None:
        assert self._db is not None
        known = dict(self._channel_ids)
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT INTO samples (run_id, t_ns, channel_id, value, quality, detail)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (run_id, s.t_ns, self._channel_id(s.device, s.channel, s.unit),
                         s.value, s.quality.value, s.detail)
                        for s, run_id in tagged
                    ],
                )
        except BaseException:
            self._channel_ids = known  # channels added here went with the rollback
            raise

    def _insert_event(self, kind: str, detail: str, run_id: str | None, t_ns: int) -> int:
        assert self._db is not None
        cursor = self._db.execute(
            "INSERT INTO events (run_id, t_ns, kind, detail) VALUES (?, ?, ?, ?)",
            (run_id, t_ns, kind, detail),
        )
        return int(cursor.lastrowid or 0)

    def _insert_position(self, position: dict[str, Any], t_ns: int) -> int:
        assert self._db is not None
        cursor = self._db.execute(
            "INSERT INTO point_positions (point, t_ns, latitude, longitude, altitude_m,"
            " h_spread_m, v_spread_m, n_fixes, source, min_quality)"
            " VALUES (:point, :t_ns, :latitude, :longitude, :altitude_m,"
            " :horizontal_spread_m, :vertical_spread_m, :n_fixes, :source, :min_quality)",
            position | {"t_ns": t_ns},
        )
        return int(cursor.lastrowid or 0)

    def _insert_dut_reports(self, rows: Sequence[dict[str, Any]]) -> int:
        assert self._db is not None
        columns = DUT_REPORT_COLUMNS[1:]
        sql = (f"INSERT INTO dut_reports ({', '.join(columns)})"
               f" VALUES ({', '.join(':' + column for column in columns)})")
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(sql, [{column: row.get(column) for column in columns}
                                           for row in rows])
        except sqlite3.IntegrityError as error:
            if "dut_reports.import_key" not in str(error):
                raise
            known = [row["import_key"] for row in rows if self._db.execute(
                "SELECT 1 FROM dut_reports WHERE import_key = ?", (row.get("import_key"),)
            ).fetchone()]
            what = (f"{len(known)} of these {len(rows)} report(s) were imported before "
                    f"(import key {known[0]})" if known else "an import key repeats")
            raise DuplicateImportError(f"{self.path}: {what}: nothing written") from None
        return len(rows)

    def _write(self, sql: str, params: Iterable[Any]) -> int:
        assert self._db is not None
        cursor = self._db.execute(sql, tuple(params))
        return int(cursor.rowcount)

    def _enqueue(self, topic: str, payload: dict[str, Any], qos: int) -> int:
        assert self._db is not None
        with self._db:
            self._db.execute("BEGIN")
            cursor = self._db.execute(
                "INSERT INTO outbox (topic, payload, qos, created_ns) VALUES (?, '', ?, ?)",
                (topic, qos, time.time_ns()))
            seq = int(cursor.lastrowid or 0)
            body = json.dumps({"seq": seq, **payload}, default=str, ensure_ascii=False)
            self._db.execute("UPDATE outbox SET payload = ? WHERE seq = ?", (body, seq))
        return seq

    def _query(self, sql: str, params: Iterable[Any]) -> list[tuple[Any, ...]]:
        assert self._db is not None
        return self._db.execute(sql, tuple(params)).fetchall()

    def _cursor(self, sql: str, params: Iterable[Any]) -> sqlite3.Cursor:
        assert self._db is not None
        return self._db.execute(sql, tuple(params))

    def _fetch(self, cursor: sqlite3.Cursor, size: int) -> list[tuple[Any, ...]]:
        return cursor.fetchmany(size)

    # --- event-loop side ----------------------------------------------------------

    async def add_samples(self, tagged: Sequence[tuple[Sample, str | None]]) -> None:
        """Commit a batch of samples, each with its run (or None), in one transaction."""
        if tagged:
            await self._run(self._insert_samples, tagged)

    async def add_event(
        self, kind: str, detail: dict[str, Any] | None = None, run_id: str | None = None,
        t_ns: int | None = None,
    ) -> int:
        """Commit one event row now (durable before this returns)."""
        payload = json.dumps(detail or {}, default=str, ensure_ascii=False)
        return await self._run(self._insert_event, kind, payload, run_id,
                               t_ns if t_ns is not None else time.time_ns())

    async def recent_command_ids(self, limit: int = 10_000) -> list[str]:
        """Ids of the last commands handled, oldest first (to refuse repeats after a restart)."""
        rows = await self.query(
            "SELECT json_extract(detail, '$.reply.id') FROM events WHERE kind = 'command'"
            " ORDER BY id DESC LIMIT ?", limit)
        return [command_id for (command_id,) in reversed(rows) if command_id]

    async def add_position(self, position: dict[str, Any]) -> int:
        """Record a release point's position as used from now on; returns its row id."""
        return await self._run(self._insert_position, position, time.time_ns())

    async def create_run(self, row: dict[str, Any]) -> None:
        """Insert a run row (status 'running'); committed before this returns."""
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        await self._run(self._write, f"INSERT INTO runs ({columns}) VALUES ({marks})",
                        list(row.values()))

    async def finish_run(self, run_id: str, status: str, reason: str | None,
                         t_end_ns: int) -> None:
        """Close a run row; `t_end_ns` is the end the recorder attributes samples by."""
        await self._run(self._write,
                        "UPDATE runs SET status = ?, reason = ?, t_end_ns = ? WHERE id = ?",
                        (status, reason, t_end_ns, run_id))

    async def save_step(self, row: dict[str, Any]) -> None:
        """Insert or replace a step row (written at arming, again when it ends)."""
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        await self._run(self._write,
                        f"INSERT OR REPLACE INTO steps ({columns}) VALUES ({marks})",
                        list(row.values()))

    async def mark_interrupted_runs(self) -> list[str]:
        """Runs left 'running' by a crash become 'interrupted'; returns their ids."""
        open_runs = [row[0] for row in await self.query(
            "SELECT id FROM runs WHERE status = 'running'")]
        for run_id in open_runs:
            await self.finish_run(run_id, "interrupted",
                                  "the daemon stopped without closing the run (crash or "
                                  "power loss); found at the next start", time.time_ns())
        return open_runs

    async def add_dut_report(self, row: dict[str, Any]) -> None:
        """Commit one DUT report row (see `dut_reports` in schema.sql) before returning."""
        await self.add_dut_reports([row])

    async def add_dut_reports(self, rows: Sequence[dict[str, Any]]) -> int:
        """Commit DUT report rows all or nothing, in one transaction; how many. An import
        key already in the store is a DuplicateImportError, and nothing is written."""
        unknown = {key for row in rows for key in row} - set(DUT_REPORT_COLUMNS[1:])
        if unknown:
            raise ValueError(f"no dut_reports column(s) {', '.join(sorted(unknown))}")
        return await self._run(self._insert_dut_reports, rows) if rows else 0

    async def run_at(self, t_ns: int) -> str | None:
        """The run whose time span holds `t_ns` (a run still going holds every later time)."""
        rows = await self.query(
            "SELECT id FROM runs WHERE t_start_ns <= ? AND (t_end_ns IS NULL OR t_end_ns >= ?)"
            " ORDER BY t_start_ns DESC LIMIT 1", t_ns, t_ns)
        return rows[0][0] if rows else None

    async def dut_reports(self, run_id: str | None) -> list[dict[str, Any]]:
        """A run's DUT reports (run_id None: those outside any run), in time order."""
        rows = await self.query(f"SELECT {', '.join(DUT_REPORT_COLUMNS)} FROM dut_reports"
                                " WHERE run_id IS ? ORDER BY t_ns, id", run_id)
        return [dict(zip(DUT_REPORT_COLUMNS, row, strict=True)) for row in rows]

    async def enqueue(self, topic: str, payload: dict[str, Any], qos: int = 1) -> int:
        """Queue an MQTT message for store-and-forward; its payload gets `seq`."""
        return await self._run(self._enqueue, topic, payload, qos)

    async def unsent(self, after_seq: int, limit: int = 100) -> list[tuple[int, str, str, int]]:
        """(seq, topic, payload, qos) of unsent messages after `after_seq`, oldest first."""
        return [tuple(row) for row in await self.query(  # type: ignore[misc]
            "SELECT seq, topic, payload, qos FROM outbox WHERE sent_ns IS NULL AND seq > ?"
            " ORDER BY seq LIMIT ?", after_seq, limit)]

    async def outbox_backlog(self) -> int:
        """How many outbox messages wait for the broker's acknowledgement."""
        return int((await self.query("SELECT count(*) FROM outbox WHERE sent_ns IS NULL"))[0][0])

    async def mark_sent(self, seq: int) -> None:
        await self._run(self._write, "UPDATE outbox SET sent_ns = ? WHERE seq = ?",
                        (time.time_ns(), seq))

    async def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read-only helper for tools and tests."""
        return await self._run(self._query, sql, params)

    async def records(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """The rows of a query as dicts keyed by column name."""
        rows: list[dict[str, Any]] = []
        async for columns, batch in self.batches(sql, *params):
            rows.extend(dict(zip(columns, row, strict=True)) for row in batch)
        return rows

    async def batches(self, sql: str, *params: Any, size: int = 50_000
                      ) -> AsyncIterator[tuple[list[str], list[tuple[Any, ...]]]]:
        """The rows of a query, `size` at a time, each batch with the column names: a
        long run's samples are read without holding them all in memory."""
        cursor = await self._run(self._cursor, sql, params)
        columns = [column[0] for column in cursor.description or ()]
        try:
            while rows := await self._run(self._fetch, cursor, size):
                yield columns, rows
        finally:
            await self._run(cursor.close)
