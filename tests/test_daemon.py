"""The daemon end to end: simulator -> drivers -> bus -> recorder -> SQLite, and fail-safe exits."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from acquisition.config.station import StationConfig
from acquisition.daemon.daemon import Daemon
from drivers.sample import Quality
from simulators.station import SimStation
from tests.stations import read_until

EXPECTED = {"no_reply": Quality.TIMEOUT, "bad_crc": Quality.TIMEOUT,
            "exception": Quality.DEVICE_ERROR, "slow": Quality.TIMEOUT}

REPO = Path(__file__).resolve().parent.parent


def db(config: StationConfig) -> sqlite3.Connection:
    return sqlite3.connect(config.storage.path)


def events(config: StationConfig) -> list[tuple[str, dict]]:
    with db(config) as conn:
        return [(kind, json.loads(detail))
                for kind, detail in conn.execute("SELECT kind, detail FROM events ORDER BY id")]


class RunningDaemon:
    """A daemon task in this process, stopped the way a signal would stop it; the test
    sees its samples as they are published, like any other consumer of the bus."""

    def __init__(self, config: StationConfig) -> None:
        self.daemon = Daemon(config)
        self.samples = self.daemon.bus.subscribe("test")
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.daemon.run(self.stop), name="daemon-under-test")

    async def next_poll(self, device: str, quality: Quality) -> None:
        """Until a poll of `device` whose samples all have `quality` is published."""
        async with asyncio.timeout(10):
            while True:
                batch = await self.samples.queue.get()
                if batch[0].device == device and all(s.quality is quality for s in batch):
                    return

    async def wait_polled(self, polls: int = 3, good_only: bool = False) -> None:
        """Until every MFC has been polled `polls` times (one batch a poll); with
        `good_only`, polls that were answered (a loaded machine may time one out)."""
        batches: Counter[str] = Counter()
        async with asyncio.timeout(10):
            while min(batches[name] for name in self.daemon.config.mfcs) < polls:
                batch = await self.samples.queue.get()
                if not good_only or all(sample.ok for sample in batch):
                    batches[batch[0].device] += 1

    async def finish(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


@pytest.fixture
async def running(config: StationConfig, sim: SimStation) -> AsyncIterator[RunningDaemon]:
    daemon = RunningDaemon(config)
    try:
        yield daemon
    finally:
        if not daemon.task.done():
            await daemon.finish()


async def test_records_every_channel_with_utc_stamps(
    config: StationConfig, sim: SimStation, running: RunningDaemon
) -> None:
    t0 = time.time_ns()
    await running.wait_polled(5, good_only=True)
    await running.finish()
    t1 = time.time_ns()
    with db(config) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute(
            "SELECT device, channel, unit, count(*), min(t_ns), max(t_ns) FROM samples_v"
            " WHERE quality = 'ok' GROUP BY device, channel, unit").fetchall()
        recorded = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
    expected = {(name, channel) for name, mfc in config.mfcs.items()
                for channel in mfc.resolved_profile.poll}
    assert {(device, channel) for device, channel, *_ in rows} == expected
    for device, channel, unit, n, first, last in rows:
        profile = config.mfcs[device].resolved_profile
        assert n >= math.ceil(5 / profile.poll_every.get(channel, 1)), (device, channel)
        assert t0 <= first <= last <= t1
        assert unit == profile.unit_of(channel)
    assert recorded == running.daemon.recorder.committed
    kinds = [kind for kind, _ in events(config)]
    assert kinds[0] == "daemon.start" and kinds[-1] == "daemon.stop"
    zeroed = [detail for kind, detail in events(config) if kind == "safety.zeroed"]
    assert [z["why"] for z in zeroed] == ["start-up", "shutdown"]
    assert all(z["unconfirmed"] == {} for z in zeroed)


async def test_zeroes_every_mfc_at_start_up(
    config: StationConfig, sim: SimStation
) -> None:
    for name in config.mfcs:  # as if a crashed daemon had left gas flowing
        sim.device(name).setpoint = 0.5 * config.mfcs[name].full_scale
    daemon = RunningDaemon(config)
    await daemon.wait_polled(1)
    assert all(sim.device(name).setpoint == 0.0 for name in config.mfcs)
    await daemon.finish()


async def test_faults_are_recorded_and_the_daemon_keeps_running(
    config: StationConfig, sim: SimStation, running: RunningDaemon
) -> None:
    await running.wait_polled(2)
    for fault, kwargs in [("no_reply", {}), ("bad_crc", {}), ("exception", {"code": 4}),
                          ("slow", {"seconds": 0.4})]:
        sim.device("alicat").set_fault(fault, **kwargs)
        await running.next_poll("alicat", EXPECTED[fault])
        sim.device("alicat").clear_fault()
        await running.next_poll("alicat", Quality.OK)
    await running.next_poll("alicat", Quality.OK)  # the poller recorded the recovery
    assert not running.task.done()
    await running.next_poll("bronkhorst", Quality.OK)
    await running.finish()
    with db(config) as conn:
        qualities = {q for (q,) in conn.execute(
            "SELECT DISTINCT quality FROM samples_v WHERE device = 'alicat'")}
        last_ok = conn.execute(
            "SELECT quality FROM samples_v WHERE device = 'alicat' ORDER BY t_ns DESC LIMIT 1"
        ).fetchone()[0]
    assert {"ok", "timeout", "device-error"} <= qualities
    assert last_ok == "ok"
    faults = [d for k, d in events(config) if k == "device.fault" and d["device"] == "alicat"]
    recoveries = [d for k, d in events(config)
                  if k == "device.recovered" and d["device"] == "alicat"]
    assert len(faults) >= 3 and len(recoveries) >= 3
    assert any("exception 4 (server device failure)" in f["detail"] for f in faults)


async def test_unplugged_line_is_recorded_and_recovers(
    config: StationConfig, sim: SimStation, running: RunningDaemon
) -> None:
    await running.wait_polled(2)
    await sim.line("bus0").unplug(1.0)
    await running.next_poll("alicat", Quality.DISCONNECTED)
    await running.next_poll("alicat", Quality.OK)
    await running.next_poll("alicat", Quality.OK)  # the poller recorded the recovery
    await running.finish()
    with db(config) as conn:
        sequence = [q for (q,) in conn.execute(
            "SELECT quality FROM samples_v WHERE device = 'alicat' AND channel = 'flow' "
            "ORDER BY t_ns")]
    assert "disconnected" in sequence
    first_bad = sequence.index("disconnected")
    assert "ok" in sequence[first_bad:], "no good sample after the replug"
    assert any(k == "device.recovered" for k, _ in events(config))


async def test_device_unreachable_at_start_is_zeroed_when_it_answers(
    config: StationConfig, sim: SimStation
) -> None:
    sim.device("bronkhorst").setpoint = 20.0
    sim.device("bronkhorst").set_fault("no_reply")
    daemon = RunningDaemon(config)
    await asyncio.wait_for(daemon.daemon.ready.wait(), 10)
    keeper = daemon.daemon.keeper
    assert list(keeper.unconfirmed()) == ["bronkhorst"]
    assert sim.device("bronkhorst").setpoint == 20.0
    sim.device("bronkhorst").clear_fault()
    await asyncio.wait_for(keeper.until(lambda: not keeper.unconfirmed()), 5)
    assert sim.device("bronkhorst").setpoint == 0.0
    await daemon.finish()
    late = [d for k, d in events(config) if k == "safety.confirmed"]
    assert late == [{"device": "bronkhorst", "late": True}]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_zeroes_every_mfc_before_exit(
    config: StationConfig, sim: SimStation, tmp_path: Path, signum: int
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "acquisition.cli", "daemon",
        "--config", str(tmp_path / "station.toml"),
        stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    try:
        started = await read_until(process.stderr, '"event": "acquiring"')
        for name in config.mfcs:  # gas flowing when the signal comes
            sim.device(name).setpoint = 0.3 * config.mfcs[name].full_scale
        process.send_signal(signum)
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    assert all(sim.device(name).setpoint == 0.0 for name in config.mfcs)
    stderr = "".join(started).encode() + stderr
    kinds = [(k, d.get("why")) for k, d in events(config)]
    assert ("safety.zeroed", "shutdown") in kinds and kinds[-1][0] == "daemon.stop"
    log_lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    # JSON logs off a tty
    assert any(line["event"].startswith("all MFCs zeroed") for line in log_lines)


def test_bad_store_path_is_a_clear_error(tmp_path: Path) -> None:
    import subprocess

    blocker = tmp_path / "file"
    blocker.write_text("")
    config = tmp_path / "c.toml"
    config.write_text(f"""
station = "x"
[storage]
path = "{blocker / 'store.sqlite'}"
[lines.l]
port = "{tmp_path / 'nothing'}"
""")
    result = subprocess.run([sys.executable, "-m", "acquisition.cli", "daemon",
                             "--config", str(config), "--duration", "1"],
                            capture_output=True, text=True, cwd=REPO, timeout=20,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode != 0
    assert "cannot open run store" in result.stderr
