"""A sample belongs to the run whose [t_start, t_end] holds its timestamp, whenever its
batch is committed: before, at and after both boundaries, late, and between two runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from acquisition.config.station import StationConfig
from acquisition.run.state import State
from acquisition.samples.bus import SampleBus, Subscription
from acquisition.samples.recorder import Recorder
from acquisition.store.store import Store
from drivers.sample import Sample
from simulators.station import SimStation
from tests.stations import running_daemon, store_rows
from tests.test_run import POINTS, plan_of

START = 1_900_000_000 * 10**9  # R1 runs [START, END]; R2 starts right after
END = START + 60 * 10**9
LATE_NS = 10**9  # the recorder under test keeps an ended run's window for 1 s of stamps


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(tmp_path / "store.sqlite")
    await store.open()
    for run_id, t_start in (("R1", START), ("R2", END + 1)):
        await store.create_run({"id": run_id, "station": "t", "config_hash": "0",
                                "software": "t", "t_start_ns": t_start, "status": "running"})
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def bus() -> SampleBus:
    return SampleBus()


@pytest.fixture
def recorder(store: Store, bus: SampleBus) -> Recorder:
    return Recorder(store, bus.subscribe("recorder"), interval_s=1.0, late_s=LATE_NS / 1e9)


async def commit(recorder: Recorder, bus: SampleBus, *stamps: int) -> None:
    """Samples stamped at `stamps` arrive now and are committed."""
    bus.publish([Sample(t_ns, 0, "alicat", "flow", 1.0, "SLPM") for t_ns in stamps])
    await recorder.flush()


async def run_of(store: Store) -> dict[int, str | None]:
    return {t_ns: run_id for t_ns, run_id in await store.query("SELECT t_ns, run_id FROM samples")}


async def test_both_boundaries_belong_to_the_run(recorder: Recorder, bus: SampleBus,
                                                 store: Store) -> None:
    recorder.run_started("R1", START)
    await commit(recorder, bus, START - 1, START, START + 1)  # while the run goes on
    recorder.run_ended("R1", END)
    await commit(recorder, bus, END - 1, END, END + 1)
    assert await run_of(store) == {START - 1: None, START: "R1", START + 1: "R1",
                                   END - 1: "R1", END: "R1", END + 1: None}


async def test_a_batch_committed_after_the_end_is_split_by_time(
    recorder: Recorder, bus: SampleBus, store: Store
) -> None:
    recorder.run_started("R1", START)
    recorder.run_ended("R1", END)
    await commit(recorder, bus, START - 1, START, END, END + 1)
    assert await run_of(store) == {START - 1: None, START: "R1", END: "R1", END + 1: None}


async def test_late_samples_stamped_in_the_run_are_its_until_the_window_is_dropped(
    recorder: Recorder, bus: SampleBus, store: Store
) -> None:
    recorder.run_started("R1", START)
    recorder.run_ended("R1", END)
    await commit(recorder, bus, END + LATE_NS)  # newest stamp: just within the window's keep
    await commit(recorder, bus, END - 5)  # a slow device's sample, stamped in the run
    await commit(recorder, bus, END + LATE_NS + 1)  # now no sample of the run can follow
    await commit(recorder, bus, END - 4)
    assert await run_of(store) == {END + LATE_NS: None, END - 5: "R1",
                                   END + LATE_NS + 1: None, END - 4: None}


async def test_back_to_back_runs(recorder: Recorder, bus: SampleBus, store: Store) -> None:
    recorder.run_started("R1", START)
    recorder.run_ended("R1", END)
    recorder.run_started("R2", END + 1)
    await commit(recorder, bus, END, END + 1)
    await commit(recorder, bus, END - 1)  # late for R1, after R2 started
    recorder.run_ended("R2", END + 10)
    await commit(recorder, bus, END + 10, END + 11)
    assert await run_of(store) == {END - 1: "R1", END: "R1", END + 1: "R2",
                                   END + 10: "R2", END + 11: None}


async def test_a_run_never_ended_ends_where_the_next_starts(
    recorder: Recorder, bus: SampleBus, store: Store
) -> None:
    recorder.run_started("R1", START)  # its closing failed: no run_ended
    recorder.run_started("R2", END + 1)
    await commit(recorder, bus, END, END + 1, END + 2)
    assert await run_of(store) == {END: "R1", END + 1: "R2", END + 2: "R2"}


@pytest.fixture
def config(make_config: Callable[..., StationConfig]) -> StationConfig:
    return make_config(extra=POINTS)


async def published_after(watch: Subscription, t_ns: int) -> None:
    """Until a sample stamped after `t_ns` has been published."""
    while not any(s.t_ns > t_ns for s in await asyncio.wait_for(watch.queue.get(), 5)):
        continue


async def test_a_completed_run_holds_exactly_the_samples_of_its_window(
    config: StationConfig, sim: SimStation
) -> None:
    async with running_daemon(config) as daemon:
        watch = daemon.bus.subscribe("test")
        await asyncio.wait_for(watch.queue.get(), 5)  # samples before the run
        run_id = await daemon.scheduler.start(plan_of(config, [{"point": "P1", "rate": 0}]))
        assert await asyncio.wait_for(daemon.scheduler.wait(), 30) is State.COMPLETED
        (t_start, t_end), = store_rows(config, "SELECT t_start_ns, t_end_ns FROM runs")
        await published_after(watch, t_end)  # and samples after it
    rows = store_rows(config, "SELECT t_ns, run_id FROM samples")
    inside = {run for t_ns, run in rows if t_start <= t_ns <= t_end}
    before = {run for t_ns, run in rows if t_ns < t_start}
    after = {run for t_ns, run in rows if t_ns > t_end}
    assert (before, inside, after) == ({None}, {run_id}, {None})
