"""Station configs for tests (every line on a private pty path or a free TCP port), and a
daemon running in the test's own event loop."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from acquisition.config import StationConfig
from acquisition.daemon import Daemon


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_station(
    tmp_path: Path, *, baudrate: int = 115200, pace: bool = False, extra: str = ""
) -> Path:
    """Alicat + Bronkhorst on a pty line, a generic MFC on Modbus TCP, an Alicat on RTU/TCP.

    `extra` is appended (e.g. `[sim.mfcs.alicat]` tables); the file is station.toml.
    """
    path = tmp_path / "station.toml"
    path.write_text(f"""
station = "test"
[storage]
path = "{tmp_path / 'store.sqlite'}"
[acquisition]
sample_rate_hz = 10
commit_interval_s = 0.2
zero_timeout_s = 1.0
[lines.bus0]
port = "{tmp_path / 'dev' / 'bus0'}"
baudrate = {baudrate}
parity = "N"  # ptys here refuse parity bits; 8N2 has the same 11-bit character
stopbits = 2
timeout_s = 0.15
retries = 0
reconnect_min_s = 0.1
reconnect_max_s = 0.4
[lines.tcp0]
transport = "tcp"
host = "127.0.0.1"
tcp_port = {free_port()}
timeout_s = 0.15
retries = 0
reconnect_min_s = 0.1
reconnect_max_s = 0.4
[lines.rtutcp0]
transport = "rtu-tcp"
host = "127.0.0.1"
tcp_port = {free_port()}
timeout_s = 0.15
retries = 0
[mfcs.alicat]
line = "bus0"
unit_id = 1
profile = "alicat"
full_scale = 10
[mfcs.bronkhorst]
line = "bus0"
unit_id = 2
profile = "bronkhorst"
full_scale = 50
[mfcs.generic_le]
line = "tcp0"
unit_id = 1
profile = "generic"
full_scale = 200
word_order = "little"
registers = {{ flow = 100, setpoint = 102 }}
[mfcs.over_tcp]
line = "rtutcp0"
unit_id = 7
profile = "alicat"
full_scale = 20
[sim]
pace = {str(pace).lower()}
seed = 7
{extra}
""")
    return path


def store_rows(config: StationConfig, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Query the station's run store the way an engineer would, with sqlite3."""
    with sqlite3.connect(config.storage.path) as conn:
        return conn.execute(sql, params).fetchall()


@asynccontextmanager
async def running_daemon(config: StationConfig) -> AsyncIterator[Daemon]:
    """A daemon in this process, yielded once ready; stopped at the end as SIGTERM would."""
    daemon = Daemon(config)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop), name="daemon-under-test")
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        yield daemon
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def read_until(stream: asyncio.StreamReader | None, text: str,
                     timeout_s: float = 20) -> list[str]:
    """A child process's output lines up to the first that contains `text`."""
    assert stream is not None
    seen = []
    async with asyncio.timeout(timeout_s):
        while line := (await stream.readline()).decode():
            seen.append(line)
            if text in line:
                return seen
    raise AssertionError(f"the output ended without {text!r}: {''.join(seen)}")


async def start_crf_run(tmp_path: Path) -> asyncio.subprocess.Process:
    """`crf run` of a one-step sequence at P1 (0.1 kg/h, a 60 s hold) on tmp_path's station;
    its progress lines come on stderr."""
    sequences = tmp_path / "sequences"
    sequences.mkdir(exist_ok=True)
    (sequences / "long.toml").write_text(
        'name = "long"\n[defaults]\nsettle_window_s = 0.5\nhold_s = 60\n'
        '[[steps]]\npoint = "P1"\nrate = 0.1\n')
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "acquisition.cli", "run", "--config",
        str(tmp_path / "station.toml"), "--sequence", "long",
        stderr=asyncio.subprocess.PIPE)
