"""A rehearsal end to end: a short run on the simulated station, the simulated DUT
reporting through a real mosquitto after each hold, the daemon storing its reports, and
every step matched to its report; refused reports are answered and kept in the event log."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable

import aiomqtt

from acquisition.config.station import StationConfig
from acquisition.dut.show import load, render
from acquisition.run.state import State
from simulators.station import SimStation
from tests.broker import Broker
from tests.stations import running_daemon, store_rows
from tests.test_mqtt import mqtt_table
from tests.test_run import POINTS, plan_of

DUT = """
[dut.d1]
reporting_delay_s = 0
min_overlap = 0.5
[sim.dut.d1]
bias = 0.05
noise_kg_h = 0.001
localization_error_m = 2.0
seed = 3
"""


async def test_every_step_gets_the_report_the_simulated_dut_sent(
    make_config: Callable[..., StationConfig], broker: Broker
) -> None:
    config = make_config(extra=POINTS + mqtt_table(broker) + DUT)
    async with SimStation(config) as sim, running_daemon(config) as daemon:
        await asyncio.wait_for(daemon.link.online.wait(), 10)  # type: ignore[union-attr]
        steps = [{"point": "P1", "rate": 0}, {"point": "P1", "rate": 0.1},
                 {"point": "P1", "rate": 0.3}]
        run_id = await daemon.scheduler.start(plan_of(config, steps))
        assert await asyncio.wait_for(daemon.scheduler.wait(), 60) is State.COMPLETED
        dut = sim.dut("d1")
        await asyncio.wait_for(dut.until(lambda: len(dut.reports) == 3), 10)
        intake = daemon.link.reports  # type: ignore[union-attr]
        await asyncio.wait_for(intake.until(lambda: intake.accepted == 3), 10)
        run, stored_steps, results = await load(daemon.store, config, run_id, None)
        render(run, stored_steps, results, sys.stdout)  # as `crf dut show` prints it
    (result,) = results
    assert result.dut_id == "d1" and result.configured
    per_step = {step: [match.report for match in matches]
                for step, matches in result.matching.steps.items()}
    assert sorted(per_step) == [0, 1, 2] and all(len(r) == 1 for r in per_step.values())
    assert not result.matching.unassigned
    blank, low, high = (per_step[index][0] for index in range(3))
    assert blank["detected"] == 0 and blank["rate_kg_h"] == 0
    truths = {row["idx"]: row["truth_mean"] for row in stored_steps}
    for report, index in ((low, 1), (high, 2)):
        assert abs(report["rate_kg_h"] - 1.05 * truths[index]) < 0.01, (report, truths)
    events = store_rows(config, "SELECT count(*) FROM events WHERE kind = 'dut.report'"
                                " AND run_id = ?", run_id)
    assert events == [(3,)]


async def test_a_bad_report_is_answered_with_the_field_and_kept_in_the_log(
    make_config: Callable[..., StationConfig], broker: Broker
) -> None:
    config = make_config(extra=POINTS + mqtt_table(broker))
    async with SimStation(config), running_daemon(config) as daemon, \
            aiomqtt.Client("127.0.0.1", broker.port) as dut:
        await asyncio.wait_for(daemon.link.online.wait(), 10)  # type: ignore[union-attr]
        await dut.subscribe("crf/test/dut/lidar/report/reply", qos=1)
        replies = aiter(dut.messages)
        await dut.publish("crf/test/dut/lidar/report", json.dumps(
            {"t": time.time(), "rate": 1.2, "unit": "furlongs"}), qos=1)
        refused = json.loads((await asyncio.wait_for(anext(replies), 10)).payload)
        good = json.dumps({"t": time.time(), "rate": 1.2, "unit": "kg/h", "lat": 34.75,
                           "lon": 113.63})
        await dut.publish("crf/test/dut/lidar/report", good, qos=1)
        accepted = json.loads((await asyncio.wait_for(anext(replies), 10)).payload)
        await dut.publish("crf/test/dut/lidar/report", good, qos=1)  # as a redelivery would
        again = json.loads((await asyncio.wait_for(anext(replies), 10)).payload)
        await dut.publish("crf/test/dut/lidar/report", good, qos=1, retain=True)
        retained = json.loads((await asyncio.wait_for(anext(replies), 10)).payload)
        await dut.publish("crf/test/dut/lidar/report", b"", qos=1, retain=True)  # clear it
        await asyncio.wait_for(anext(replies), 10)  # an empty report is refused, and says so
    assert refused["ok"] is False and refused["error"]["code"] == "unknown_unit"
    assert "unit" in refused["error"]["message"]
    assert accepted["ok"] is True and accepted["run_id"] is None  # no run at that time
    assert again == accepted | {"duplicate": True}
    assert retained["ok"] is False and retained["error"]["code"] == "retained"
    assert store_rows(config, "SELECT dut_id, rate_kg_h, source FROM dut_reports") == [
        ("lidar", 1.2, "mqtt")]
    logged = store_rows(config, "SELECT json_extract(detail, '$.code') FROM events"
                                " WHERE kind = 'dut.report.refused'")
    assert logged[:2] == [("unknown_unit",), ("retained",)]

