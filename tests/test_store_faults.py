"""A full or failing store: one plain error that names the file and the free space, no
chained sqlite traceback, and everything committed before it intact."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import sqlite3
import subprocess
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from acquisition.config.station import ConfigError, StationConfig, load_config
from acquisition.exit_codes import EXIT_FAILED
from acquisition.store.store import MIB, Store, StoreError, StoreFullError
from drivers.sample import Sample
from simulators.station import SimStation
from tests.stations import HOLDING, read_until, start_crf_run, store_rows, write_station
from tests.test_run import POINTS

T0 = 1_800_000_000 * 10**9
BATCH = 200
RUN = "20270115T080000Z-0001"


def batch(number: int, run_id: str | None = None) -> list[tuple[Sample, str | None]]:
    """Samples of ~250 bytes each, on a channel first seen in this batch."""
    return [(Sample(T0 + number * BATCH + i, 0, "mfc", f"ch{number}", float(number * BATCH + i),
                    "SLPM", detail="x" * 200), run_id)
            for i in range(BATCH)]


async def fill(store: Store, run_id: str | None = None) -> tuple[int, StoreFullError]:
    """Write batches until the store is full: how many were committed, and the error."""
    for number in range(10_000):
        try:
            await store.add_samples(batch(number, run_id))
        except StoreFullError as error:
            return number, error
    raise AssertionError("the store never filled up")


def committed_rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT t_ns, channel, value, run_id FROM samples_v"
                            " ORDER BY t_ns").fetchall()


def expected_rows(batches: int, run_id: str | None) -> list[tuple[object, ...]]:
    return [(sample.t_ns, sample.channel, sample.value, run_id)
            for number in range(batches) for sample, _ in batch(number)]


def assert_plain(error: StoreError) -> None:
    """What an operator sees: the message, without sqlite's exception chained to it."""
    shown = "".join(traceback.format_exception(error))
    assert error.__cause__ is None and error.__suppress_context__
    assert "During handling" not in shown and "sqlite3." not in shown, shown


def free_bytes_in(error: StoreFullError, path: Path) -> int:
    match = re.fullmatch(rf"store full: {re.escape(str(path))}, (\d+) bytes free", str(error))
    assert match, str(error)
    return int(match[1])


@pytest.fixture
async def capped(tmp_path: Path) -> AsyncIterator[Store]:
    """A store capped at 1 MiB by `storage.max_size_mb`, with one run row."""
    path = write_station(tmp_path)
    path.write_text(path.read_text().replace("[storage]\n", "[storage]\nmax_size_mb = 1\n"))
    config = load_config(path)
    store = Store(config.storage.path, config.storage.max_size_mb)
    await store.open()
    await store.create_run({"id": RUN, "station": "test", "config_hash": "0", "software": "t",
                            "t_start_ns": T0, "status": "running"})
    try:
        yield store
    finally:
        await store.close()


async def test_a_capped_store_fills_with_a_plain_error_and_keeps_its_rows(
    capped: Store
) -> None:
    batches, error = await fill(capped, RUN)
    assert batches > 5
    free = free_bytes_in(error, capped.path)
    assert abs(free - shutil.disk_usage(capped.path.parent).free) < 64 * MIB  # the disk's
    assert_plain(error)
    (pages,), = await capped.query("PRAGMA page_count")
    (page_size,), = await capped.query("PRAGMA page_size")
    assert 0.9 * MIB < pages * page_size <= MIB
    assert committed_rows(capped.path) == expected_rows(batches, RUN)
    # Closing the run is an update in place: it still fits, and says why.
    await capped.finish_run(RUN, "failed", str(error), T0 + 10**9)
    assert await capped.query("SELECT status, reason, t_end_ns FROM runs") == [
        ("failed", str(error), T0 + 10**9)]


async def test_a_batch_that_did_not_fit_leaves_no_trace(capped: Store) -> None:
    """Its new channel went with the rollback: written again once there is room, its
    samples name that channel, not a stale id (a foreign key error) or another's."""
    batches, _ = await fill(capped)
    with sqlite3.connect(capped.path) as conn:
        conn.execute("DELETE FROM samples WHERE t_ns < ?", (T0 + BATCH,))  # frees pages
    await capped.add_samples(batch(batches))
    rows = committed_rows(capped.path)
    assert rows == expected_rows(batches + 1, None)[BATCH:]
    assert rows[-1][1] == f"ch{batches}"
    assert await capped.query("PRAGMA integrity_check") == [("ok",)]


async def test_other_failures_are_a_plain_store_error_naming_the_file(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.sqlite")
    await store.open()
    row = {"id": RUN, "station": "test", "config_hash": "0", "software": "t",
           "t_start_ns": T0, "status": "running"}
    try:
        await store.create_run(row)
        with pytest.raises(StoreError) as caught:
            await store.create_run(row)
    finally:
        await store.close()
    assert not isinstance(caught.value, StoreFullError)
    assert str(caught.value) == (f"{store.path}: cannot write run store: "
                                 "UNIQUE constraint failed: runs.id")
    assert_plain(caught.value)


def test_max_size_mb_is_optional_and_at_least_one(tmp_path: Path) -> None:
    path = write_station(tmp_path)
    assert load_config(path).storage.max_size_mb is None
    path.write_text(path.read_text().replace("[storage]\n", "[storage]\nmax_size_mb = 0\n"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        ("storage.max_size_mb", "Input should be greater than or equal to 1 (got 0)")]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 600 KiB tmpfs: a disk that really fills up. Mounting it needs root."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mountpoint)],
            capture_output=True, text=True, check=False)
    except OSError as error:
        pytest.skip(f"no mount command to make a small disk: {error}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): "
                    f"{mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "--lazy", str(mountpoint)], check=True)


async def test_a_full_disk_is_a_plain_error_and_keeps_the_rows(tiny_disk: Path) -> None:
    store = Store(tiny_disk / "store.sqlite")
    await store.open()
    try:
        batches, error = await fill(store)
        assert batches > 0
        assert free_bytes_in(error, store.path) == shutil.disk_usage(tiny_disk).free
        assert free_bytes_in(error, store.path) < 64 * 1024
        assert_plain(error)
        try:  # a small event may fit in what the WAL already holds; if not, it says so
            await store.add_event("note", {"text": "disk full"}, t_ns=time.time_ns())
        except StoreFullError as again:
            assert_plain(again)
    finally:
        await store.close()
    assert committed_rows(store.path) == expected_rows(batches, None)


def nearly_full(path: Path, headroom_bytes: int) -> None:
    """A store at its 1 MiB cap but for `headroom_bytes` of free pages, as after weeks of
    recording: filler notes until it is full, then enough of them deleted."""
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA max_page_count = {MIB // 4096}")
        notes = 0
        with contextlib.suppress(sqlite3.OperationalError):  # database or disk is full
            while True:
                conn.execute("INSERT INTO events (t_ns, kind, detail) VALUES (0, 'note', ?)",
                             ("x" * 1000,))
                conn.commit()
                notes += 1
        conn.execute("DELETE FROM events WHERE id <= ?", (headroom_bytes // 1000,))
        assert notes > headroom_bytes // 1000


async def test_crf_run_on_a_filling_store_says_so_plainly_and_ends_safe(
    make_config: Callable[..., StationConfig], tmp_path: Path
) -> None:
    make_config(extra=POINTS)
    station = tmp_path / "station.toml"
    station.write_text(station.read_text().replace(
        "[storage]\n", "[storage]\nmax_size_mb = 1\n", 1))
    config = load_config(station)
    store = Store(config.storage.path, config.storage.max_size_mb)
    await store.open()  # the schema, as a daemon makes it
    await store.close()
    nearly_full(config.storage.path, 150_000)
    async with SimStation(config) as sim:
        runner = await start_crf_run(tmp_path)
        try:
            await read_until(runner.stderr, HOLDING)
            _, rest = await asyncio.wait_for(runner.communicate(), 60)
        finally:
            if runner.returncode is None:
                runner.kill()
                await runner.wait()
        assert sim.device("alicat").setpoint == 0.0 and not sim.valve_open("V1")
    out = rest.decode()
    assert runner.returncode == EXIT_FAILED, out
    assert re.search(rf"crf run: store full: {re.escape(str(config.storage.path))}, "
                     r"\d+ bytes free", out), out
    assert "Traceback" not in out and "never retrieved" not in out, out
    status, reason = store_rows(config, "SELECT status, reason FROM runs")[0]
    assert status == "failed" and reason.startswith("store full: "), (status, reason)
