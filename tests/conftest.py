"""Shared fixtures: station configs on private ptys / free TCP ports, a running simulator."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from acquisition.config import StationConfig, load_config
from simulators.station import SimStation


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def station_toml(tmp_path: Path, *, pace: bool = False, extra: str = "") -> str:
    """Three Alicat/Bronkhorst MFCs on a pty line, one on Modbus TCP, one on RTU-over-TCP."""
    return f"""
station = "test"
[storage]
path = "{tmp_path / 'store.sqlite'}"
[acquisition]
sample_rate_hz = 10
commit_interval_s = 0.2
zero_timeout_s = 1.0
[lines.bus0]
port = "{tmp_path / 'dev' / 'bus0'}"
baudrate = 115200
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
"""


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., StationConfig]:
    def make(**kwargs: object) -> StationConfig:
        path = tmp_path / "station.toml"
        path.write_text(station_toml(tmp_path, **kwargs))  # type: ignore[arg-type]
        return load_config(path)

    return make


@pytest.fixture
def config(make_config: Callable[..., StationConfig]) -> StationConfig:
    return make_config()


@pytest.fixture
async def sim(config: StationConfig) -> AsyncIterator[SimStation]:
    station = SimStation(config)
    await station.start()
    try:
        yield station
    finally:
        await station.stop()


@pytest.fixture(autouse=True)
async def no_leftover_tasks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail an async test that leaves tasks running behind it (a leak in our code)."""
    yield
    if not asyncio.iscoroutinefunction(request.function):
        return
    await asyncio.sleep(0)
    current = asyncio.current_task()
    leftovers = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for task in leftovers:
        task.cancel()
    assert not leftovers, f"test left tasks running: {[t.get_name() for t in leftovers]}"
