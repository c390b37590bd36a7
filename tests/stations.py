"""Station configs for tests (every line on a private pty path or a free TCP port), and a
daemon running in the test's own event loop."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from acquisition.config.station import StationConfig
from acquisition.daemon.daemon import Daemon
from simulators.station import SimStation


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


# The progress line of `crf run` while the long run holds ("holding registers" in a Modbus
# error logged on the same stream must not pass for it).
HOLDING = "[alicat]  holding"


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


T = TypeVar("T")


async def transact_until(transaction: Callable[[], Awaitable[T]], done: Callable[[T], bool],
                         timeout_s: float = 10) -> T:
    """Repeat a request to a simulated device until its reply satisfies `done`; that reply.

    For what changes with time alone (a flow settling, a totalizer counting) and so sends
    no notice: each round awaits a real reply, nothing sleeps. `transaction` must do I/O
    every time (a request refused at once, without I/O, would never let the clock run)."""
    deadline = asyncio.timeout(timeout_s)
    last: T | None = None
    try:
        async with deadline:
            while True:
                last = await transaction()
                if done(last):
                    return last
    except TimeoutError:
        if not deadline.expired():
            raise
        raise AssertionError(
            f"no reply satisfied the condition within {timeout_s} s (last: {last!r})") from None


async def past_late_replies(sim: SimStation, line: str,
                            neighbour: Callable[[], Awaitable[bool]]) -> None:
    """After a `slow` fault is cleared: return once every reply it delayed has reached the
    master and been dropped, so that none is taken for the answer to the next request.

    RTU replies carry no transaction id, and a master drops a reply from a unit it did not
    ask: `neighbour` does one transaction with another unit on `line` (True if answered),
    and its reply comes after the late ones, since the line keeps bytes in order."""
    await asyncio.wait_for(sim.line(line).bus.late_replies_sent(), 10)
    assert await neighbour(), f"the neighbour on {line} did not answer after the late replies"
