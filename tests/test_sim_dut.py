"""The simulated DUT against a real mosquitto: fed run events as the daemon publishes
them, it reports each hold window it observed, with the errors configured, in a report
the station's intake accepts; junk on the event topic and a broker restart do not stop it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
import pytest

from acquisition.config.station import StationConfig
from acquisition.dut.report import validate_report
from acquisition.geodesy import distance_m
from simulators.dut import SimulatedDut
from simulators.settings import SimConfigError
from simulators.station import SimStation
from tests.broker import Broker
from tests.test_mqtt import Inbox

P1, P2 = (34.75, 113.63), (34.7501, 113.6301)
BIAS, NOISE_KG_H, MISPLACED_M = 0.1, 0.002, 3.0
WAIT_S = 10.0
REPORTS = "crf/test/dut/+/report"


@pytest.fixture
def config(make_config: Callable[..., StationConfig], broker: Broker) -> StationConfig:
    """P1 fed by the Alicat (which follows its setpoint within 30 us), P2 by the Bronkhorst;
    DUT d1 simulated with a bias, noise and a localization error."""
    return make_config(extra=f"""
[release_points.P1]
mfcs = ["alicat"]
latitude = {P1[0]}
longitude = {P1[1]}
[release_points.P2]
mfcs = ["bronkhorst"]
latitude = {P2[0]}
longitude = {P2[1]}
[mqtt]
url = "{broker.url}"
reconnect_min_s = 0.1
reconnect_max_s = 0.5
[dut.d1]
[sim.mfcs.alicat]
time_constant_s = 0.000001
noise = 0.0
[sim.dut.d1]
bias = {BIAS}
noise_kg_h = {NOISE_KG_H}
localization_error_m = {MISPLACED_M}
seed = 11
""")


@pytest.fixture
async def monitor(broker: Broker) -> AsyncIterator[tuple[aiomqtt.Client, Inbox]]:
    """A client that sees every DUT report, and publishes the run events."""
    inbox = Inbox()
    async with broker.client() as client:
        await client.subscribe(REPORTS, qos=1)

        async def listen() -> None:
            async for message in client.messages:
                await inbox.add(json.loads(message.payload))  # type: ignore[arg-type]

        listener = asyncio.create_task(listen())
        try:
            yield client, inbox
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)


@pytest.fixture
async def dut(sim: SimStation) -> SimulatedDut:
    """DUT d1 of the simulated station, once it is subscribed to the run events."""
    running = sim.dut("d1")
    await connected(running)
    return running


class Run:
    """Publishes a run's `run.state` events exactly as the daemon's outbox does."""

    def __init__(self, client: aiomqtt.Client, run_id: str = "20261124-081500-abcd") -> None:
        self.client = client
        self.run_id = run_id
        self.seq = 0

    async def state(self, state: str, step: int | None = None, point: str | None = None
                    ) -> int:
        """Publish one state change; its t_ns."""
        self.seq += 1
        t_ns = time.time_ns()
        detail: dict[str, Any] = {"state": state}
        if step is not None:
            detail |= {"step": step, "point": point}
        await self.client.publish(f"crf/test/run/{self.run_id}/event", json.dumps({
            "run_id": self.run_id, "t_ns": t_ns, "kind": "run.state", "detail": detail,
            "seq": self.seq}), qos=1)
        return t_ns


async def until(dut: SimulatedDut, condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        await dut.until(condition)


async def hold(run: Run, dut: SimulatedDut, step: int, point: str, ended_by: str
               ) -> tuple[int, int]:
    """A hold at `point` that the DUT samples at least 5 times; (start, end) t_ns."""
    seen = dut.events
    start = await run.state("holding", step, point)
    await until(dut, lambda: dut.events > seen and dut.window is not None
                and len(dut.window.totals) >= 5)
    end = await run.state(ended_by, step + 1 if ended_by == "arming" else None, point)
    return start, end


async def connected(dut: SimulatedDut, times: int = 1) -> None:
    await until(dut, lambda: dut.connections >= times)


async def test_a_hold_is_reported_with_its_window_and_the_biased_truth(
    config: StationConfig, sim: SimStation, dut: SimulatedDut,
    monitor: tuple[aiomqtt.Client, Inbox]
) -> None:
    client, inbox = monitor
    sim.device("alicat").setpoint = 5.0  # SLPM, settled long before the hold
    run = Run(client)
    await run.state("idle")
    await run.state("arming", 0, "P1")
    await run.state("settling", 0, "P1")
    await until(dut, lambda: dut.events >= 3)
    assert sim.device("alicat").true_flow() == pytest.approx(5.0, rel=1e-12)

    start, end = await hold(run, dut, 0, "P1", "arming")
    await inbox.until(lambda: len(inbox.items) == 1)
    report = inbox.items[0]
    assert report == dut.reports[0]
    accepted = validate_report(json.dumps(report), "d1", "CH4")  # the station's intake
    assert (accepted.window_start_ns, accepted.window_end_ns) == (
        start // 1000 * 1000, end // 1000 * 1000)
    truth = config.conversion("alicat").mass_rate(5.0)
    assert report["unit"] == "kg/h" and report["detected"] is True
    assert report["rate"] == pytest.approx(truth * (1 + BIAS), abs=5 * NOISE_KG_H)
    assert report["u_rate"] == NOISE_KG_H
    # Placed by WGS-84 radii, measured on the station's sphere: within 0.5 %.
    off = distance_m(report["lat"], report["lon"], P1[0], P1[1])
    assert off == pytest.approx(MISPLACED_M, rel=5e-3)


async def test_a_blank_is_reported_as_nothing_detected(
    dut: SimulatedDut, monitor: tuple[aiomqtt.Client, Inbox]
) -> None:
    client, inbox = monitor
    await hold(Run(client), dut, 0, "P2", "completed")
    await inbox.until(lambda: len(inbox.items) == 1)
    report = inbox.items[0]
    assert report["detected"] is False
    assert (report["rate"], report["lat"], report["lon"], report["u_rate"]) == (
        0.0, None, None, None)
    assert validate_report(json.dumps(report), "d1", "CH4").detected is False


JUNK: list[bytes | str] = [
    b"", b"\xff\xfe", b"not json", b"[]", b"null", b"1e999", b'"holding"', b"[" * 100_000,
    '{"kind": "run.state"}',
    '{"kind": "run.state", "run_id": 5, "detail": {"state": "holding"}}',
    '{"kind": "run.state", "run_id": "r", "detail": "holding"}',
    '{"kind": "run.state", "run_id": "r", "detail": {"state": ["holding"]}}',
    '{"kind": "step.result", "run_id": "r", "detail": {"state": "holding"}}',
    '{"kind": "run.state", "run_id": "r", "t_ns": "soon", "seq": "x",'
    ' "detail": {"state": "arming", "step": true, "point": {"a": 1}}}',
    '{"kind": "run.state", "run_id": "r", "t_ns": 1e999, "detail": {"state": "completed"}}',
]


async def test_junk_and_repeated_events_neither_stop_it_nor_make_reports(
    dut: SimulatedDut, monitor: tuple[aiomqtt.Client, Inbox]
) -> None:
    client, inbox = monitor
    for payload in JUNK:
        await client.publish("crf/test/run/r/event", payload, qos=1)
    run = Run(client)
    first = await run.state("holding", 0, "P1")
    run.seq -= 1  # the outbox sending the same row again
    await run.state("holding", 0, "P1")
    await run.state("holding", 0, "P1")  # a new row, the same hold
    await until(dut, lambda: dut.events >= 4)  # two junk events that parse, two holdings
    await run.state("arming", 1, "P1")
    await hold(run, dut, 1, "P1", "completed")
    await inbox.until(lambda: len(inbox.items) == 2)
    assert validate_report(json.dumps(inbox.items[0]), "d1", "CH4").window_start_ns == (
        first // 1000 * 1000)
    assert dut.reports == inbox.items and dut.connections == 1


async def test_it_reconnects_after_a_broker_restart(dut: SimulatedDut, broker: Broker) -> None:
    broker.restart()
    await connected(dut, 2)
    async with broker.client() as client:
        await client.subscribe(REPORTS, qos=1)
        await hold(Run(client), dut, 0, "P1", "completed")
        async with asyncio.timeout(WAIT_S):
            message = await anext(client.messages)
    assert json.loads(message.payload)["dut_id"] == "d1"  # type: ignore[arg-type]
    assert dut.last_error is not None


@pytest.mark.parametrize(("extra", "problem"), [
    ('[dut.d1]\n[sim.dut.d9]\n[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n',
     ("sim.dut.d9", "no DUT named 'd9' (defined: d1)")),
    ("[dut.d9]\n[sim.dut.d9]\n",
     ("sim.dut", "a simulated DUT reports over MQTT: the config has no [mqtt] table")),
])
def test_a_simulated_dut_is_a_configured_one_with_a_broker(
    make_config: Callable[..., StationConfig], extra: str, problem: tuple[str, str]
) -> None:
    with pytest.raises(SimConfigError) as error:
        SimStation(make_config(extra=extra))
    assert error.value.problems == [problem]
