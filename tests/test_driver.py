"""The MFC driver against the simulator over a real pty, Modbus TCP and RTU-over-TCP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from acquisition.config.station import StationConfig
from acquisition.samples.devices import StationDevices, build_devices
from drivers.mfc import SetpointError
from drivers.modbus_line import DeviceExceptionError, DeviceTimeoutError, LineDownError
from drivers.sample import Quality, Sample
from simulators.station import SimStation
from tests.stations import past_late_replies, transact_until

ALL_MFCS = ["alicat", "bronkhorst", "generic_le", "over_tcp"]


@pytest.fixture
async def devices(config: StationConfig, sim: SimStation) -> StationDevices:
    built = build_devices(config)
    yield built
    built.close()


def values(samples: list) -> dict[str, float]:
    return {s.channel: s.value for s in samples if s.ok}


async def neighbour_answers(devices: StationDevices) -> bool:
    """Whether the Bronkhorst, next to the Alicat on bus0, answers a poll."""
    return all(s.ok for s in await devices.mfcs["bronkhorst"].poll())


@pytest.mark.parametrize("name", ALL_MFCS)
async def test_set_flow_and_poll_every_profile_and_transport(
    devices: StationDevices, sim: SimStation, name: str
) -> None:
    mfc = devices.mfcs[name]
    first = await mfc.poll()  # the first poll reads every polled register
    assert {s.channel for s in first} == set(mfc.profile.poll)
    assert all(s.ok for s in first), [s.detail for s in first if not s.ok]
    target = mfc.full_scale * 0.4
    held = await mfc.set_flow(target)
    assert held == pytest.approx(target, rel=1e-6)
    assert sim.device(name).setpoint == pytest.approx(target, rel=1e-6)

    def settled(samples: list[Sample]) -> bool:  # within half the tolerance asserted below
        flow = values(samples).get("flow")
        return flow is not None and abs(flow - target) < 0.01 * mfc.full_scale

    samples = await transact_until(mfc.poll, settled)  # several time constants
    assert all(s.ok for s in samples), [s.detail for s in samples if not s.ok]
    flow = values(samples)["flow"]
    assert flow == pytest.approx(sim.device(name).true_flow(), abs=0.01 * mfc.full_scale)
    assert flow == pytest.approx(target, abs=0.02 * mfc.full_scale)
    await mfc.zero()
    assert sim.device(name).setpoint == 0.0


async def test_samples_are_stamped_when_the_reply_arrives(
    devices: StationDevices, sim: SimStation
) -> None:
    import time

    sim.device("alicat").set_fault("slow", seconds=0.1)
    before = time.time_ns()
    samples = await devices.mfcs["alicat"].poll()
    assert all(s.ok for s in samples)
    assert samples[0].t_ns - before >= 90_000_000  # stamped after the 0.1 s delay
    assert len({s.t_ns for s in samples}) == 1  # one transaction, one stamp


async def test_poll_reads_contiguous_registers_in_one_transaction(
    devices: StationDevices, sim: SimStation
) -> None:
    line = devices.lines["bus0"]
    mfc = devices.mfcs["alicat"]
    before = line.transactions
    samples = await mfc.poll()
    assert len(samples) == 6
    assert line.transactions - before == 1


async def test_poll_every_reads_a_slow_register_on_every_nth_poll(
    devices: StationDevices, sim: SimStation
) -> None:
    line = devices.lines["bus0"]
    mfc = devices.mfcs["bronkhorst"]  # poll_every = { temperature = 10 }, 28 registers apart
    assert mfc.profile.poll_every == {"temperature": 10}
    read: list[dict[str, float]] = []
    transactions: list[int] = []
    for _ in range(21):
        before = line.transactions
        samples = await mfc.poll()
        assert all(s.ok for s in samples), [s.detail for s in samples if not s.ok]
        read.append(values(samples))
        transactions.append(line.transactions - before)
    with_temperature = [i for i, channels in enumerate(read) if "temperature" in channels]
    assert with_temperature == [0, 10, 20]
    assert all("flow" in channels for channels in read)
    assert transactions == [2 if i in with_temperature else 1 for i in range(21)]
    simulated = sim.device("bronkhorst").values()["temperature"]
    assert read[20]["temperature"] == pytest.approx(simulated, abs=0.5)


async def test_setpoint_beyond_full_scale_is_refused_before_sending(
    devices: StationDevices, sim: SimStation
) -> None:
    line = devices.lines["bus0"]
    before = line.transactions
    with pytest.raises(SetpointError, match=r"outside 0\.\.10\.0 SLPM"):
        await devices.mfcs["alicat"].set_flow(10.5)
    with pytest.raises(SetpointError):
        await devices.mfcs["alicat"].set_flow(float("nan"))
    assert line.transactions == before
    assert sim.device("alicat").setpoint == 0.0


async def test_totalizer_reset_action(devices: StationDevices, sim: SimStation) -> None:
    mfc = devices.mfcs["alicat"]
    await mfc.set_flow(8.0)
    counted = await transact_until(lambda: mfc.read("totalizer"), lambda sl: sl > 0.05)
    assert counted > 0.05
    await mfc.run_action("totalizer_reset")
    assert await mfc.read("totalizer") < 0.02
    await mfc.zero()


@pytest.mark.parametrize(
    ("fault", "kwargs", "error", "quality"),
    [
        ("no_reply", {}, DeviceTimeoutError, Quality.TIMEOUT),
        ("bad_crc", {}, DeviceTimeoutError, Quality.TIMEOUT),
        ("exception", {"code": 4}, DeviceExceptionError, Quality.DEVICE_ERROR),
        ("slow", {"seconds": 0.5}, DeviceTimeoutError, Quality.TIMEOUT),
    ],
)
async def test_faults_become_quality_flags_and_clear_errors(
    devices: StationDevices, sim: SimStation, fault: str, kwargs: dict, error: type,
    quality: Quality,
) -> None:
    mfc = devices.mfcs["alicat"]
    sim.device("alicat").set_fault(fault, **kwargs)
    samples = await mfc.poll()
    assert {s.quality for s in samples} == {quality}
    assert all(s.value is None for s in samples)
    assert "line 'bus0' unit 1" in (samples[0].detail or "")
    with pytest.raises(error, match="unit 1"):
        await mfc.set_flow(1.0)
    # The other device on the same line is not disturbed.
    assert all(s.ok for s in await devices.mfcs["bronkhorst"].poll())
    sim.device("alicat").clear_fault()
    if fault == "slow":  # let the late replies pass before the next request
        await past_late_replies(sim, "bus0", lambda: neighbour_answers(devices))
    assert all(s.ok for s in await mfc.poll())


async def test_exception_reply_names_the_modbus_code(
    devices: StationDevices, sim: SimStation
) -> None:
    sim.device("bronkhorst").set_fault("exception", code=2)
    with pytest.raises(DeviceExceptionError, match=r"exception 2 \(illegal data address\)"):
        await devices.mfcs["bronkhorst"].read("flow")


@pytest.mark.parametrize(("line_name", "mfc_name"), [("bus0", "alicat"), ("tcp0", "generic_le")])
async def test_unplug_and_replug_recovers(
    devices: StationDevices, sim: SimStation, line_name: str, mfc_name: str
) -> None:
    mfc = devices.mfcs[mfc_name]
    assert all(s.ok for s in await mfc.poll())
    port = sim.line(line_name)
    unplug = asyncio.create_task(port.unplug(1.0))
    await asyncio.wait_for(port.unplugged.wait(), 5)
    # A request may still time out on the vanished port before the line sees it gone. Each
    # poll does I/O, or is refused at once as DISCONNECTED, which ends the loop: no idle spin.
    qualities: set[Quality] = set()
    async with asyncio.timeout(5):
        while Quality.DISCONNECTED not in qualities:
            qualities |= {s.quality for s in await mfc.poll()}
    assert Quality.DISCONNECTED in qualities
    with pytest.raises(LineDownError):
        await mfc.set_flow(1.0)
    await unplug
    # The one sleep kept: the reconnect backoff is real time the line must let pass (polls
    # before then are refused without I/O). Every failed attempt was before the replug and
    # set the next one at most reconnect_max_s later, so the next poll is due to reconnect.
    await asyncio.sleep(devices.lines[line_name].settings.reconnect_max_s)
    samples = await mfc.poll()
    assert all(s.ok for s in samples), [s.detail for s in samples]
    assert devices.lines[line_name].reconnects >= 1


async def test_missing_port_is_a_clear_line_error(tmp_path: Path, config: StationConfig) -> None:
    devices = build_devices(config)  # no simulator running: nothing at the port path
    try:
        samples = await devices.mfcs["alicat"].poll()
        assert {s.quality for s in samples} == {Quality.DISCONNECTED}
        assert f"cannot open {tmp_path / 'dev' / 'bus0'}: no such device" in (
            samples[0].detail or "")
    finally:
        devices.close()

