"""The safety invariant with the Modbus cable pulled during a hold: the devices keep their
setpoint and open valve while the line is dead, so whatever ended the release must keep
retrying until, with the cable back, the MFC reads back zero and the valve closed."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from acquisition.config.station import StationConfig
from acquisition.exit_codes import EXIT_FAILED, EXIT_UNSAFE
from acquisition.run.state import RunRejectedError, State
from simulators.station import SimStation
from tests.stations import HOLDING, read_until, running_daemon, start_crf_run, store_rows
from tests.test_run import POINTS, plan_of

BACK_TO_SAFE_S = 2.0  # retry period 0.5 s plus a few Modbus transactions, with margin


def station(make_config: Callable[..., StationConfig], action: str, wait_s: float = 60
            ) -> StationConfig:
    return make_config(extra=POINTS + f"""
[safety]
resume_after_s = 0
safe_retry_s = 0.5
safe_wait_s = {wait_s}
[safety.comm_loss]
after_s = 0.8
action = "{action}"
""")


def gas_flowing(sim: SimStation) -> bool:
    return sim.device("alicat").setpoint > 0 and sim.valve_open("V1")


def safe(sim: SimStation) -> bool:
    return sim.device("alicat").setpoint == 0.0 and not sim.valve_open("V1")


async def seconds_until_safe(sim: SimStation) -> float:
    """Plug the cable back; how long until the MFC is at zero and the valve closed."""
    sim.line("bus0").plug_cable()
    started = time.monotonic()
    await asyncio.wait_for(sim.until(lambda: safe(sim)), 10)
    return time.monotonic() - started


@pytest.mark.parametrize("action", ["abort", "pause"])
async def test_daemon_makes_safe_once_the_cable_is_back(
    make_config: Callable[..., StationConfig], action: str
) -> None:
    config = station(make_config, action, wait_s=3)
    async with SimStation(config) as sim, running_daemon(config) as daemon:
        scheduler = daemon.scheduler
        await scheduler.start(plan_of(config, [{"point": "P1", "rate": 0.1, "hold_s": 60}]))
        await asyncio.wait_for(scheduler.until(lambda status: status.state is State.HOLDING), 10)
        assert gas_flowing(sim)
        sim.line("bus0").pull_cable()
        ended = State.ABORTED if action == "abort" else State.PAUSED
        await asyncio.wait_for(scheduler.until(lambda status: status.state is ended), 10)
        await asyncio.wait_for(daemon.keeper.until(
            lambda: set(daemon.keeper.unconfirmed()) == {"alicat", "V1"}), 10)
        assert gas_flowing(sim)  # the devices kept their state: nothing was confirmed
        assert set(scheduler.snapshot()["unconfirmed"]) == {"alicat", "V1"}  # the alarm
        if action == "abort":  # no new release while a device may still be flowing
            with pytest.raises(RunRejectedError, match="not confirmed safe"):
                await scheduler.start(plan_of(config, [{"point": "P2", "rate": 0.1}]))

        took = await seconds_until_safe(sim)
        print(f"\ncomm_loss={action}: MFC zero and valve closed {took:.2f} s after the "
              "cable came back")
        assert took < BACK_TO_SAFE_S
        await asyncio.wait_for(daemon.keeper.until(lambda: not daemon.keeper.unconfirmed()),
                               5)
        assert scheduler.status.state is ended  # a paused run stays paused until an operator acts
        assert scheduler.snapshot()["unconfirmed"] == {}
    confirmed = store_rows(config, "SELECT json_extract(detail, '$.device') FROM events "
                                   "WHERE kind = 'safety.confirmed' ORDER BY id")
    assert sorted(device for (device,) in confirmed) == ["V1", "alicat"]


async def test_crf_run_does_not_exit_until_the_devices_are_safe(
    make_config: Callable[..., StationConfig], tmp_path: Path
) -> None:
    config = station(make_config, "abort")
    async with SimStation(config) as sim:
        runner = await start_crf_run(tmp_path)
        try:
            await read_until(runner.stderr, HOLDING)
            sim.line("bus0").pull_cable()
            await read_until(runner.stderr, "to be confirmed safe")
            await read_until(runner.stderr, "still not confirmed safe, retrying")
            assert runner.returncode is None and gas_flowing(sim)
            took = await seconds_until_safe(sim)
            print(f"\ncrf run: MFC zero and valve closed {took:.2f} s after the cable came back")
            assert took < BACK_TO_SAFE_S
            _, rest = await asyncio.wait_for(runner.communicate(), 20)
        finally:
            if runner.returncode is None:
                runner.kill()
                await runner.wait()
    assert runner.returncode == EXIT_FAILED  # the run was aborted, and everything is safe
    assert "DANGER" not in rest.decode()
    status, reason = store_rows(config, "SELECT status, reason FROM runs")[0]
    assert status == "aborted" and "interlock comm_loss" in reason


async def test_crf_run_gives_up_loudly_after_safe_wait(
    make_config: Callable[..., StationConfig], tmp_path: Path
) -> None:
    config = station(make_config, "abort", wait_s=1.5)
    async with SimStation(config) as sim:
        runner = await start_crf_run(tmp_path)
        try:
            await read_until(runner.stderr, HOLDING)
            sim.line("bus0").pull_cable()
            _, rest = await asyncio.wait_for(runner.communicate(), 30)
        finally:
            if runner.returncode is None:
                runner.kill()
                await runner.wait()
        assert gas_flowing(sim)  # never reachable: the process could not have zeroed it
    assert runner.returncode == EXIT_UNSAFE
    message = rest.decode()
    assert "DANGER: not confirmed safe after retrying for 1.5 s" in message
    assert "alicat:" in message and "V1:" in message


async def test_crf_run_starts_only_once_every_device_is_confirmed_safe(
    make_config: Callable[..., StationConfig], tmp_path: Path
) -> None:
    config = station(make_config, "abort")
    async with SimStation(config) as sim:
        sim.device("bronkhorst").setpoint = 20.0  # left flowing, and silent
        sim.device("bronkhorst").set_fault("no_reply")
        runner = await start_crf_run(tmp_path)
        try:
            await read_until(runner.stderr, "bronkhorst to be confirmed safe before the run")
            assert sim.device("alicat").setpoint == 0.0 and not sim.valve_open("V1")
            sim.device("bronkhorst").clear_fault()
            seen = await read_until(runner.stderr, HOLDING)  # zeroed, then the run went ahead
            assert sim.device("bronkhorst").setpoint == 0.0 and gas_flowing(sim), seen
            runner.send_signal(signal.SIGINT)
            _, rest = await asyncio.wait_for(runner.communicate(), 20)
        finally:
            if runner.returncode is None:
                runner.kill()
                await runner.wait()
    assert runner.returncode == EXIT_FAILED and "Traceback" not in rest.decode()
    assert safe(sim)


async def test_crf_run_never_starts_beside_a_device_that_stays_unconfirmed(
    make_config: Callable[..., StationConfig], tmp_path: Path
) -> None:
    config = station(make_config, "abort", wait_s=1.0)
    async with SimStation(config) as sim:
        sim.device("bronkhorst").setpoint = 20.0
        sim.device("bronkhorst").set_fault("no_reply")
        runner = await start_crf_run(tmp_path)
        _, err = await asyncio.wait_for(runner.communicate(), 30)
        assert sim.device("alicat").setpoint == 0.0 and not sim.valve_open("V1")
    message = err.decode()
    assert runner.returncode == EXIT_UNSAFE, message
    assert "DANGER" in message and "bronkhorst:" in message and "Traceback" not in message
    assert store_rows(config, "SELECT count(*) FROM runs") == [(0,)]
