"""Debian's gpsd as an independent consumer of the GNSS simulator on a pty.

gpsd 3.22 reads the pty read-only (-b) at a fixed 115200 8N1 (-s: no speed hunting;
the kernel here refuses parity on ptys anyway) and reports TPVs over its JSON socket.
What it was seen to print for each GGA quality: "status" 3 for RTK fixed, 4 for RTK
float, 2 for DGPS, no "status" for an autonomous fix, and mode 1 with no position
without a fix; mode 3 whenever there is a fix with altitude.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from acquisition.config.station import load_config
from acquisition.geodesy import offset_to_degrees
from simulators.gnss import Position, SimulatedGnss
from simulators.station import SimStation
from tests.stations import free_port, read_until, write_station

GPSD = shutil.which("gpsd") or shutil.which("gpsd", path="/usr/sbin:/usr/local/sbin")
pytestmark = pytest.mark.skipif(
    GPSD is None, reason="gpsd is not installed (apt-get install -y gpsd gpsd-clients)")

TRUE = Position(34.752057, 113.629433, 101.5)
GPSD_STATUS = {"rtk_fixed": 3, "rtk_float": 4, "dgnss": 2, "autonomous": None}
_started: list[asyncio.subprocess.Process] = []


@pytest.fixture(autouse=True)
def _no_gpsd_left_behind() -> Iterator[None]:
    """Kill our gpsd even when a test was interrupted before its own cleanup ran."""
    yield
    while _started:
        process = _started.pop()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)


@asynccontextmanager
async def gpsd_watching(device: str, workdir: Path, port: int | None = None
                        ) -> AsyncIterator[asyncio.StreamReader]:
    """gpsd on `device` (listening on `port`), and a client socket asking for JSON.

    At debug level 3 gpsd says "listening on port N" once its socket listens: the client
    connects then (if gpsd exits instead, its output is in the error)."""
    port = port or free_port()
    process = await asyncio.create_subprocess_exec(
        GPSD or "gpsd", "-N", "-n", "-b", "-s", "115200", "-S", str(port), "-D", "3",
        "-F", str(workdir / "gpsd.sock"), device,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    _started.append(process)
    assert process.stderr is not None
    writer = None
    stderr: asyncio.Task[bytes] | None = None
    try:
        await read_until(process.stderr, f"listening on port {port}", timeout_s=5)
        # Level 3 also logs every report sent to a client: read on, or the pipe fills up.
        stderr = asyncio.create_task(process.stderr.read(), name="gpsd stderr")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b'?WATCH={"enable":true,"json":true};\n')
        yield reader
    finally:
        if writer is not None:
            writer.close()
        if process.returncode is None:
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()
        if stderr is not None:
            await stderr


async def tpvs(reader: asyncio.StreamReader, count: int, since: float = 0.0
               ) -> list[dict[str, Any]]:
    """The next `count` TPV reports of epochs after host time `since`, within 6 s."""
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(6.0):
        while len(found) < count:
            report = json.loads(await reader.readline())
            if report["class"] != "TPV" or "time" not in report:
                continue
            if dt.datetime.fromisoformat(report["time"]).timestamp() > since:
                found.append(report)
    return found


def station(tmp_path: Path, quality: str = "rtk_fixed") -> SimStation:
    return SimStation(load_config(write_station(tmp_path, extra=f"""
[gnss.rx]
port = "{tmp_path / 'dev' / 'rx'}"
[sim.gnss.rx]
latitude = {TRUE.latitude}
longitude = {TRUE.longitude}
altitude_m = {TRUE.altitude_m}
rate_hz = 5
fix_quality = "{quality}"
""")))


async def test_gpsd_reports_the_simulated_rtk_fixed_position(tmp_path: Path) -> None:
    sim = station(tmp_path)
    async with sim, gpsd_watching(str(tmp_path / "dev" / "rx"), tmp_path) as reader:
        reports = await tpvs(reader, 10)
    assert {(r["mode"], r.get("status")) for r in reports} == {(3, 3)}  # 3D, RTK fixed
    lat_m, lon_m = offset_to_degrees(TRUE.latitude, 1.0, 1.0)
    north = (np.array([r["lat"] for r in reports]) - TRUE.latitude) / lat_m
    east = (np.array([r["lon"] for r in reports]) - TRUE.longitude) / lon_m
    assert np.hypot(north, east).max() < 1.0
    assert abs(north.mean()) < 0.03 and abs(east.mean()) < 0.03
    assert np.mean([r["altMSL"] for r in reports]) == pytest.approx(TRUE.altitude_m, abs=0.05)
    latest = dt.datetime.fromisoformat(reports[-1]["time"]).timestamp()
    assert 0 <= time.time() - latest < 1.0  # the receiver's UTC is the host clock's


async def test_gpsd_follows_the_fix_quality(tmp_path: Path) -> None:
    sim = station(tmp_path, quality="rtk_float")
    async with sim, gpsd_watching(str(tmp_path / "dev" / "rx"), tmp_path) as reader:
        receiver = sim.gnss("rx")
        assert isinstance(receiver, SimulatedGnss)
        seen: dict[str, set[tuple[int, int | None, bool]]] = {}
        for quality in ("rtk_float", "dgnss", "autonomous", "none", "rtk_fixed"):
            receiver.set_quality(quality)
            reports = await tpvs(reader, 4, since=time.time())
            seen[quality] = {(r["mode"], r.get("status"), "lat" in r) for r in reports}
    for quality, status in GPSD_STATUS.items():
        assert seen[quality] == {(3, status, True)}, (quality, seen)
    assert seen["none"] == {(1, None, False)}


@pytest.mark.skipif(shutil.which("gpspipe") is None, reason="gpspipe (gpsd-clients) missing")
async def test_gpspipe_sees_the_simulated_position(tmp_path: Path) -> None:
    port = free_port()
    async with station(tmp_path), gpsd_watching(str(tmp_path / "dev" / "rx"), tmp_path, port):
        process = await asyncio.create_subprocess_exec(
            "gpspipe", "-w", "-n", "40", f"127.0.0.1:{port}", stdout=asyncio.subprocess.PIPE)
        output, _ = await asyncio.wait_for(process.communicate(), 15)
    reports = [json.loads(line) for line in output.decode().splitlines() if line.startswith("{")]
    tpv = [r for r in reports if r["class"] == "TPV" and "lat" in r]
    assert tpv, "gpspipe printed no position"
    assert {(r["mode"], r.get("status")) for r in tpv} == {(3, 3)}
    assert tpv[-1]["lat"] == pytest.approx(TRUE.latitude, abs=1e-6)  # 11 cm: 7 sigma of RTK
    assert tpv[-1]["lon"] == pytest.approx(TRUE.longitude, abs=1e-6)
