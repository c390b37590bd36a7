"""GNSS receivers, weather stations and release points in the running daemon, against the
simulators: surveys, clock offset, wind, and the GNSS-fix and wind interlocks."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from acquisition.config.station import StationConfig
from acquisition.daemon.daemon import Daemon
from acquisition.geodesy import distance_m
from acquisition.run.state import State
from acquisition.samples.bus import Subscription
from drivers.sample import Sample
from simulators.station import SimStation
from tests.stations import free_port, running_daemon, store_rows
from tests.test_run import plan_of, wait_for_state

LAT, LON = 34.752057, 113.629433


def site_toml(tmp_path: Path, *, clock_offset_s: float = 0.0, wind: float = 3.0,
              safety: str = "") -> str:
    return f"""
[gnss.rx1]
port = "{tmp_path / 'dev' / 'gnss1'}"
[met.ws1]
port = "{tmp_path / 'dev' / 'met1'}"
[met.anemo]
protocol = "modbus"
line = "bus0"
unit_id = 11
[release_points.P1]
mfcs = ["alicat"]
survey = {{ receiver = "rx1", min_quality = "rtk_fixed", window_s = 30, min_fixes = 5 }}
[release_points.P2]
mfcs = ["bronkhorst"]
latitude = {LAT + 0.0002}
longitude = {LON}
[clock]
max_offset_s = 0.5
[safety]
resume_after_s = 1.0
{safety}
[sim.gnss.rx1]
latitude = {LAT}
longitude = {LON}
altitude_m = 101.5
rate_hz = 5
clock_offset_s = {clock_offset_s}
[sim.met.ws1]
wind_speed_m_s = {wind}
gust_m_s = 0.1
rate_hz = 5
[sim.met.anemo]
wind_speed_m_s = {wind}
gust_m_s = 0.1
"""


@pytest.fixture
def site_config(make_config: Callable[..., StationConfig], tmp_path: Path,
                request: pytest.FixtureRequest) -> StationConfig:
    options = getattr(request, "param", {})
    return make_config(extra=site_toml(tmp_path, **options))


class Tap:
    """Passes every call on to an async callable, then wakes `until`: a test awaits what
    those calls make true (an event recorded, a batch of samples committed)."""

    def __init__(self, target: Callable[..., Awaitable[Any]]) -> None:
        self.target = target
        self._called = asyncio.Condition()

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = await self.target(*args, **kwargs)
        async with self._called:
            self._called.notify_all()
        return result

    async def until(self, condition: Callable[[], object], timeout_s: float = 10) -> None:
        """Return once `condition()` holds: checked now and after every call."""
        async with asyncio.timeout(timeout_s), self._called:
            await self._called.wait_for(condition)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Tap:
    """Every event the daemons of this test record (in the store when `until` checks);
    installed before a daemon is built, since its components keep its `event`."""
    tap = Tap(Daemon.event)

    async def event(daemon: Daemon, *args: Any, **kwargs: Any) -> Any:
        return await tap(daemon, *args, **kwargs)

    monkeypatch.setattr(Daemon, "event", event)
    return tap


@pytest.fixture
async def site(site_config: StationConfig, recorded: Tap
               ) -> AsyncIterator[tuple[SimStation, Daemon]]:
    """The simulated site and a daemon on it (`recorded` taps its events from the start)."""
    async with SimStation(site_config) as sim, running_daemon(site_config) as daemon:
        yield sim, daemon


async def until_published(subscription: Subscription,
                          seen: Callable[[Sequence[Sample]], bool]) -> None:
    """Until a batch published on the bus makes `seen(batch)` true; `seen` gets every
    batch once and in order, so it may count."""
    async with asyncio.timeout(10):
        while not seen(await subscription.queue.get()):
            pass


async def test_survey_position_is_recorded_and_attached_to_runs_and_steps(
    site_config: StationConfig, site: tuple[SimStation, Daemon], recorded: Tap
) -> None:
    _sim, daemon = site
    await recorded.until(lambda: "P1" in daemon.site.position_ids)
    position = daemon.site.position("P1")
    assert position is not None and position.n_fixes >= 5
    assert distance_m(position.latitude, position.longitude, LAT, LON) < 0.05
    assert 0 < position.horizontal_spread_m < 0.1  # RTK fixed noise: centimetres
    await daemon.scheduler.start(plan_of(site_config, [{"point": "P1", "rate": 0.05},
                                                       {"point": "P2", "rate": 0.2}]))
    assert await asyncio.wait_for(daemon.scheduler.wait(), 30) is State.COMPLETED
    stored = store_rows(site_config, "SELECT s.release_point, p.source, p.n_fixes, p.h_spread_m "
                               "FROM steps s JOIN point_positions p ON p.id = s.position_id "
                               "ORDER BY s.idx")
    assert stored[0][:2] == ("P1", "gnss:rx1") and stored[0][2] >= 5
    assert stored[1][:3] == ("P2", "surveyed", 0)
    positions = json.loads(store_rows(site_config, "SELECT positions_json FROM runs")[0][0])
    assert positions["P1"]["source"] == "gnss:rx1"
    assert positions["P2"]["latitude"] == pytest.approx(LAT + 0.0002)


async def test_gnss_met_and_anemometer_samples_are_recorded(
    site_config: StationConfig, site: tuple[SimStation, Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    _sim, daemon = site
    gnss = ("lat", "lon", "alt", "fix_quality", "sats", "hdop", "sigma_lat", "clock_offset",
            "receiver_utc")
    expected = {*(("rx1", channel) for channel in gnss), ("ws1", "wind_speed"),
                ("ws1", "air_temperature"), ("ws1", "air_pressure"), ("anemo", "wind_speed")}

    def recorded_channels() -> dict[tuple[str, str], tuple[int, float]]:
        return {(device, channel): (n, mean) for device, channel, n, mean in store_rows(
            site_config, "SELECT device, channel, count(*), avg(value) FROM samples_v "
                         "WHERE quality = 'ok' GROUP BY device, channel")}

    committed = Tap(daemon.store.add_samples)  # the recorder's commits
    monkeypatch.setattr(daemon.store, "add_samples", committed)
    await committed.until(lambda: expected <= recorded_channels().keys())
    channels = recorded_channels()
    for channel in gnss:
        assert ("rx1", channel) in channels, channel
    assert channels[("rx1", "fix_quality")][1] == 4.0
    assert channels[("rx1", "lat")][1] == pytest.approx(LAT, abs=1e-6)
    assert abs(channels[("rx1", "clock_offset")][1]) < 0.5
    assert channels[("ws1", "wind_speed")][1] == pytest.approx(3.0, abs=0.5)
    assert ("ws1", "air_temperature") in channels and ("ws1", "air_pressure") in channels
    assert channels[("anemo", "wind_speed")][1] == pytest.approx(3.0, abs=0.5)


@pytest.mark.parametrize("site_config", [{"clock_offset_s": 2.0}], indirect=True)
async def test_clock_offset_beyond_the_limit_raises_a_warning_and_is_on_the_run(
    site_config: StationConfig, site: tuple[SimStation, Daemon], recorded: Tap
) -> None:
    _sim, daemon = site
    await recorded.until(lambda: store_rows(site_config, "SELECT 1 FROM events "
                                                   "WHERE kind = 'clock.offset_exceeded'"))
    detail = json.loads(store_rows(site_config, "SELECT detail FROM events "
                                          "WHERE kind = 'clock.offset_exceeded'")[0][0])
    assert detail["offset_s"] == pytest.approx(2.0, abs=0.3)
    await daemon.scheduler.start(plan_of(site_config, [{"point": "P2", "rate": 0.1}]))
    await daemon.scheduler.wait()
    assert store_rows(site_config, "SELECT clock_offset_s FROM runs")[0][0] == pytest.approx(
        2.0, abs=0.3)


async def test_gnss_fix_lost_pauses_and_the_run_resumes_when_it_is_back(
    site_config: StationConfig, site: tuple[SimStation, Daemon], recorded: Tap
) -> None:
    sim, daemon = site
    await recorded.until(lambda: "P1" in daemon.site.position_ids)
    scheduler = daemon.scheduler
    await scheduler.start(plan_of(site_config, [{"point": "P1", "rate": 0.05, "hold_s": 30}]))
    await wait_for_state(scheduler, State.HOLDING)
    sim.gnss("rx1").set_quality("rtk_float")  # below the survey's rtk_fixed
    await wait_for_state(scheduler, State.PAUSED)
    assert sim.device("alicat").setpoint == 0.0
    sim.gnss("rx1").set_quality("rtk_fixed")
    await wait_for_state(scheduler, State.HOLDING)  # resumed by itself once clear for 1 s
    scheduler.abort("test over")
    await scheduler.wait()
    kinds = [kind for (kind,) in store_rows(site_config, "SELECT kind FROM events WHERE kind LIKE "
                                                   "'interlock%' ORDER BY id")]
    assert kinds == ["interlock", "interlock.cleared"]
    reason = json.loads(store_rows(site_config, "SELECT detail FROM events "
                                          "WHERE kind = 'interlock'")[0][0])["reason"]
    assert "fix quality rtk_float, below rtk_fixed" in reason


@pytest.mark.parametrize("site_config", [{"safety": """[safety.wind]
device = "ws1"
channel = "wind_speed"
min = 0.5
max = 8.0
action = "abort"
"""}], indirect=True)
async def test_wind_out_of_range_aborts(
    site_config: StationConfig, site: tuple[SimStation, Daemon]
) -> None:
    sim, daemon = site
    scheduler = daemon.scheduler
    await scheduler.start(plan_of(site_config, [{"point": "P2", "rate": 0.2, "hold_s": 30}]))
    await wait_for_state(scheduler, State.HOLDING)
    sim.met("ws1").wind.speed_m_s = 12.0  # type: ignore[union-attr]
    assert await asyncio.wait_for(scheduler.wait(), 10) is State.ABORTED
    assert "above the ceiling of 8.0" in (scheduler.status.reason or "")
    assert sim.device("bronkhorst").setpoint == 0.0


async def test_nmea_over_tcp_from_a_file_and_after_an_unplug(
    make_config: Callable[..., StationConfig], tmp_path: Path
) -> None:
    capture = Path(__file__).parent / "data" / "captures" / "globalsat-bu353s4.nmea"
    config = make_config(extra=f"""
[gnss.rx_tcp]
transport = "tcp"
host = "127.0.0.1"
tcp_port = {free_port()}
reconnect_min_s = 0.1
reconnect_max_s = 0.2
[gnss.rx_pty]
port = "{tmp_path / 'dev' / 'gnss'}"
reconnect_min_s = 0.1
reconnect_max_s = 0.2
[gnss.rx_file]
transport = "file"
path = "{capture}"
[sim.gnss.rx_tcp]
latitude = {LAT}
longitude = {LON}
rate_hz = 5
[sim.gnss.rx_pty]
latitude = {LAT}
longitude = {LON}
rate_hz = 5
corrupt_fraction = 0.2
junk = true
""")
    async with SimStation(config) as sim:
        daemon = Daemon(config)
        published = daemon.bus.subscribe("test")  # before the daemon runs: every batch
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        await asyncio.wait_for(daemon.ready.wait(), 10)
        fixes: Counter[str] = Counter()  # good `lat` samples per receiver

        def count(batch: Sequence[Sample]) -> None:
            fixes.update(s.device for s in batch if s.channel == "lat" and s.ok)

        def read_from_pty(batch: Sequence[Sample]) -> bool:
            count(batch)
            return fixes["rx_pty"] > 0

        await until_published(published, read_from_pty)
        await sim.gnss("rx_pty").unplug(1.0)  # its 1 s is the scenario's, not a wait
        replugged_ns = time.time_ns()
        stats = daemon.site.gnss["rx_pty"].stats
        read_again = False

        def all_heard(batch: Sequence[Sample]) -> bool:
            nonlocal read_again
            count(batch)
            read_again |= any(s.device == "rx_pty" and s.t_ns > replugged_ns for s in batch)
            return (read_again and fixes["rx_tcp"] >= 10 and fixes["rx_file"] >= 10
                    and stats["bad_checksum"] > 0 and stats["junk_bytes"] > 0
                    and stats["sentences"] > 20)

        await until_published(published, all_heard)
        stop.set()
        await task
    counts = dict(store_rows(config, "SELECT device, count(*) FROM samples_v WHERE channel = 'lat' "
                               "AND quality = 'ok' GROUP BY device"))
    assert counts["rx_tcp"] >= 10 and counts["rx_file"] == 10  # the capture's 10 fixes
    after = store_rows(config, "SELECT count(*) FROM samples_v "
                               "WHERE device = 'rx_pty' AND t_ns > ?", replugged_ns)
    assert after[0][0] > 0, "no GNSS samples after the receiver came back"
    assert stats["bad_checksum"] > 0 and stats["junk_bytes"] > 0 and stats["sentences"] > 20
