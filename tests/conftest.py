"""Shared fixtures: station configs on private ptys / free TCP ports, a running simulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from acquisition.config.station import StationConfig, load_config
from simulators.station import SimStation
from tests.stations import write_station

pytest_plugins = ["tests.broker", "tests.calibrated"]


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., StationConfig]:
    def make(**kwargs: object) -> StationConfig:
        return load_config(write_station(tmp_path, **kwargs))  # type: ignore[arg-type]

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
