"""One real calibration run, made once per test session for the tools that read a finished
run (`crf report`, `crf runs`): the simulated station, a real mosquitto, the daemon, and
the simulated DUT (+5 % bias, 2 m localization error) reporting after every hold, and a
simulated weather station giving the calibration conditions that the `[certificate]`
table limits. The sequence has a blank and two points with two repeats each, so that
every figure of the results (errors, repeatabilities, localization, parity) exists.

Register with `pytest_plugins = ["tests.calibrated"]`; use the `calibrated_run` fixture
and never write to its store (copy it first): it is shared by every test of the session.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from acquisition.config.station import StationConfig, load_config
from acquisition.run.state import State
from simulators.station import SimStation
from tests.broker import Broker
from tests.stations import running_daemon, write_station
from tests.test_dut_live import DUT
from tests.test_mqtt import mqtt_table
from tests.test_run import POINTS, plan_of

# The weather the simulated station reports, and the certificate's limits around it.
TEMPERATURE_C, PRESSURE_HPA, WIND_M_S, WIND_FROM_DEG = 21.5, 1008.0, 3.0, 250.0
CERTIFICATE = """
[certificate]
laboratory = "Test Metrology Lab"
address = "1 Test Road"
recalibration_interval_months = 6
[certificate.conditions]
device = "ws1"
temperature_c = { min = -10, max = 40 }
pressure_kpa = { min = 80, max = 110 }
wind_speed_m_s = { min = 0.5, max = 12 }
wind_sector_deg = [180, 340]
"""


def met_tables(workdir: Path) -> str:
    return f"""
[met.ws1]
port = "{workdir / 'dev' / 'met1'}"
[sim.met.ws1]
wind_speed_m_s = {WIND_M_S}
gust_m_s = 0.3
direction_deg = {WIND_FROM_DEG}
temperature_c = {TEMPERATURE_C}
pressure_hpa = {PRESSURE_HPA}
rate_hz = 2
"""


STEPS = [{"point": "P1", "rate": 0}, {"point": "P1", "rate": 0.1},
         {"point": "P1", "rate": 0.3}, {"point": "P1", "rate": 0.1},
         {"point": "P1", "rate": 0.3}]


@dataclass(frozen=True)
class CalibratedRun:
    config_path: Path
    config: StationConfig
    run_id: str
    dut_id: str = "d1"


async def _calibrate(config: StationConfig) -> str:
    async with SimStation(config) as sim, running_daemon(config) as daemon:
        assert daemon.link is not None
        await asyncio.wait_for(daemon.link.online.wait(), 10)
        run_id = await daemon.scheduler.start(plan_of(config, STEPS), operator="tester",
                                              dut="simulated DUT d1")
        assert await asyncio.wait_for(daemon.scheduler.wait(), 90) is State.COMPLETED
        dut = sim.dut("d1")
        await asyncio.wait_for(dut.until(lambda: len(dut.reports) == len(STEPS)), 10)
        intake = daemon.link.reports
        await asyncio.wait_for(intake.until(lambda: intake.accepted == len(STEPS)), 10)
    return run_id


@pytest.fixture(scope="session")
def calibrated_run(tmp_path_factory: pytest.TempPathFactory) -> CalibratedRun:
    workdir = tmp_path_factory.mktemp("calibrated")
    with Broker(workdir / "broker") as broker:
        path = write_station(workdir, extra=POINTS + mqtt_table(broker) + DUT
                             + met_tables(workdir) + CERTIFICATE)
        config = load_config(path)
        run_id = asyncio.run(_calibrate(config))
    return CalibratedRun(path, config, run_id)
