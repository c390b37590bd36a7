"""The MFC simulator on real ptys and sockets, checked by independent Modbus masters.

Note on parity: Linux (seen on 6.18) refuses PARENB on a pty with EINVAL when pyserial
re-applies its settings, so pymodbus serial clients here open the pty as 8N1. The
simulator paces from its own line config (8E1 below), which is what the timing test checks.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import select
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest

from acquisition.config.station import StationConfig, load_config
from drivers.profile import load_profile
from simulators.physics import MfcPhysics
from simulators.registers import RegisterBank
from simulators.settings import SimConfigError
from simulators.station import SimStation
from tests.stations import past_late_replies, transact_until, write_station

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 0.2
FLOAT = AsyncModbusSerialClient.DATATYPE.FLOAT32


def port_of(config: StationConfig, line: str = "bus0") -> str:
    return config.lines[line].port or ""


def port_linked(config: StationConfig) -> bool:
    """Whether the serial port path is there (an lstat on tmpfs: fine in async code)."""
    return os.path.islink(port_of(config))


async def serial_client(config: StationConfig) -> AsyncModbusSerialClient:
    client = AsyncModbusSerialClient(
        port_of(config), framer=FramerType.RTU, baudrate=config.lines["bus0"].baudrate,
        parity="N", timeout=TIMEOUT, retries=0, reconnect_delay=0,
    )
    assert await client.connect()
    return client


async def tcp_client(config: StationConfig, line: str) -> AsyncModbusTcpClient:
    settings = config.lines[line]
    framer = FramerType.RTU if settings.transport == "rtu-tcp" else FramerType.SOCKET
    client = AsyncModbusTcpClient(
        settings.host or "", port=settings.tcp_port or 0, framer=framer,
        timeout=TIMEOUT, retries=0, reconnect_delay=0,
    )
    assert await client.connect()
    return client


def as_float(registers: list[int], word_order: str = "big") -> float:
    return float(AsyncModbusSerialClient.convert_from_registers(
        registers, FLOAT, word_order=word_order))  # type: ignore[arg-type]


async def read_float(client: AsyncModbusSerialClient | AsyncModbusTcpClient, address: int,
                     device_id: int, word_order: str = "big") -> float:
    """One float register pair, read in one transaction (an error reply fails the test)."""
    reply = await client.read_holding_registers(address, count=2, device_id=device_id)
    assert not reply.isError(), reply
    return as_float(reply.registers, word_order)


def float_words(value: float, word_order: str = "big") -> list[int]:
    return AsyncModbusSerialClient.convert_to_registers(
        value, FLOAT, word_order=word_order)  # type: ignore[arg-type]


# --- physics and register map, no I/O ------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_first_order_step_response_and_totalizer() -> None:
    clock = FakeClock()
    physics = MfcPhysics(10.0, np.random.default_rng(1), time_constant_s=0.5, clock=clock)
    physics.setpoint = 8.0
    clock.now += 0.5
    assert physics.true_flow() == pytest.approx(8.0 * (1 - math.exp(-1)), rel=1e-9)  # 63 %
    clock.now += 10.0
    assert physics.true_flow() == pytest.approx(8.0, rel=1e-6)
    # 10.5 s at 8 SLPM, less the lag of one time constant: tau * sp.
    expected_sl = (8.0 * 10.5 - 8.0 * 0.5 * (1 - math.exp(-21))) / 60
    assert physics.read().totalizer == pytest.approx(expected_sl, rel=1e-9)
    physics.reset_totalizer()
    assert physics.read().totalizer == 0.0
    physics.tare()  # with 8 SLPM flowing: the reading is now off by -8
    assert physics.read().flow == pytest.approx(0.0, abs=0.1)
    assert physics.true_flow() == pytest.approx(8.0, rel=1e-6)


def test_noise_is_gaussian_around_the_true_flow_which_never_goes_negative() -> None:
    clock = FakeClock()
    physics = MfcPhysics(10.0, np.random.default_rng(2), noise=0.001, clock=clock)
    physics.setpoint = 5.0
    clock.now += 60
    flows = np.array([physics.read().flow for _ in range(4000)])
    assert flows.mean() == pytest.approx(5.0, abs=0.001)
    assert flows.std() == pytest.approx(0.01, rel=0.1)
    physics.setpoint = 0.0
    clock.now += 60
    zero = np.array([physics.read().flow for _ in range(1000)])
    assert physics.true_flow() >= 0.0
    assert (zero < 0).any() and (zero > 0).any()
    assert abs(zero.mean()) < 0.002


def test_readable_gaps_match_what_the_driver_merges() -> None:
    assert RegisterBank(load_profile("alicat")).read("holding", 1200, 12, _zeros("alicat")) == (
        [0] * 12)
    ten = RegisterBank(load_profile("generic").with_overrides({"flow": 0, "setpoint": 12}))
    words = ten.read("holding", 0, 14, {"flow": 1.0, "setpoint": 2.0})
    assert isinstance(words, list) and words[2:12] == [0] * 10
    eleven = RegisterBank(load_profile("generic").with_overrides({"flow": 0, "setpoint": 13}))
    assert eleven.read("holding", 0, 15, {"flow": 1.0, "setpoint": 2.0}) == 2  # illegal address
    with pytest.raises(ValueError, match="overlap"):
        RegisterBank(load_profile("generic").with_overrides({"flow": 0, "setpoint": 1}))


def _zeros(profile: str) -> dict[str, float]:
    return dict.fromkeys(load_profile(profile).registers, 0.0)


def test_sim_table_is_validated_with_clear_errors(tmp_path: Path) -> None:
    cases = {
        "[sim.mfcs.alicat]\nnois = 0.1": r"sim\.mfcs\.alicat\.nois: unknown key",
        "[sim.mfcs.nobody]\nnoise = 0.1": r"sim\.mfcs\.nobody: no MFC named 'nobody'",
        "[sim.mfcs.alicat]\ntime_constant_s = 0": r"sim\.mfcs\.alicat\.time_constant_s",
        "[sim.mfcs.alicat]\nfault = \"melt\"": r"sim\.mfcs\.alicat\.fault",
        "[sim.mfcs.alicat]\nfault = \"slow\"\nfault_code = 3": "applies only to the 'exception'",
        "[sim.lines.bus9]\npace = true": r"sim\.lines\.bus9: no line named 'bus9'",
    }
    for table, message in cases.items():
        config = load_config(write_station(tmp_path, extra=table))
        with pytest.raises(SimConfigError, match=message):
            SimStation(config)


# --- independent master: libmodbus's mbpoll on the pty -------------------------------


async def test_mbpoll_reads_alicat_floats_from_the_pty(
    config: StationConfig, sim: SimStation
) -> None:
    alicat = sim.device("alicat")
    alicat.setpoint = 4.0
    client = await serial_client(config)
    try:  # until the flow is well on its way (0.01 SLPM of noise)
        await transact_until(lambda: read_float(client, 1208, 1), lambda flow: flow > 2.0)
    finally:
        client.close()  # mbpoll is the only master from here on
    before = alicat.true_flow()
    process = await asyncio.create_subprocess_exec(
        "mbpoll", "-m", "rtu", "-a", "1", "-b", "115200", "-P", "even", "-t", "4:float", "-B",
        "-r", "1203", "-c", "4", "-1", "-o", "1", port_of(config),  # registers 1203..1210
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 5)
    after = alicat.true_flow()
    assert process.returncode == 0, err.decode()
    values = {int(ref): float(value)
              for ref, value in re.findall(r"^\[(\d+)\]:\s+(\S+)", out.decode(), re.M)}
    assert values[1203] == pytest.approx(14.7, abs=0.1)  # psia
    assert values[1205] == pytest.approx(20.0, abs=0.2)  # degC
    assert before - 0.05 < values[1209] < after + 0.05  # mass flow, SLPM; 5 sigma of noise
    assert values[1207] == pytest.approx(values[1209] * 293.15 / 298.15, rel=0.01)  # at 20 C


# --- pymodbus serial master ----------------------------------------------------------


async def test_alicat_over_the_pty(config: StationConfig, sim: SimStation) -> None:
    client = await serial_client(config)
    totalizer_reads = 0

    async def totalizer() -> float:
        nonlocal totalizer_reads
        totalizer_reads += 1
        return await read_float(client, 1210, 1)

    try:
        reply = await client.write_registers(1009, float_words(6.5), device_id=1)
        assert not reply.isError()
        assert sim.device("alicat").setpoint == pytest.approx(6.5)
        block = await client.read_holding_registers(1200, count=12, device_id=1)  # poll_blocks
        assert not block.isError()
        assert as_float(block.registers[2:4]) == pytest.approx(14.7, abs=0.1)
        readback = await client.read_holding_registers(1009, count=2, device_id=1)
        assert as_float(readback.registers) == pytest.approx(6.5)
        refused = await client.write_registers(1009, float_words(10.6), device_id=1)
        assert refused.isError() and refused.exception_code == 3  # > 1.05 x full scale
        refused = await client.write_registers(1009, float_words(-0.1), device_id=1)
        assert refused.isError() and refused.exception_code == 3
        assert sim.device("alicat").setpoint == pytest.approx(6.5)
        read_only = await client.write_registers(1208, float_words(1.0), device_id=1)
        assert read_only.isError() and read_only.exception_code == 2
        unmapped = await client.read_holding_registers(1009, count=3, device_id=1)
        assert unmapped.isError() and unmapped.exception_code == 2
        unknown_command = await client.write_registers(999, [9, 9], device_id=1)
        assert unknown_command.isError() and unknown_command.exception_code == 3
        total = await transact_until(totalizer, lambda sl: sl > 0.02)
        assert total > 0.02  # SL counted since 6.5 SLPM was set
        assert not (await client.write_registers(999, [5, 0], device_id=1)).isError()
        total = await client.read_holding_registers(1210, count=2, device_id=1)
        assert as_float(total.registers) < 0.001
        assert not (await client.write_registers(999, [4, 1], device_id=1)).isError()  # tare
        with pytest.raises(ModbusIOException):  # nobody at unit 9: silence, as on RS-485
            await client.read_holding_registers(1208, count=2, device_id=9)
    finally:
        client.close()
    assert sim.device("alicat").requests_served == 11 + totalizer_reads
    assert sim.line("bus0").transactions == 11 + totalizer_reads


async def test_bronkhorst_linked_registers(config: StationConfig, sim: SimStation) -> None:
    client = await serial_client(config)
    try:
        capacity = await client.read_holding_registers(0x8168, count=2, device_id=2)
        assert as_float(capacity.registers) == 50.0
        assert not (await client.write_register(0x0021, 16000, device_id=2)).isError()  # 50 %
        assert sim.device("bronkhorst").setpoint == pytest.approx(25.0)
        setpoint = await client.read_holding_registers(0xA118, count=2, device_id=2)
        assert as_float(setpoint.registers) == pytest.approx(25.0)
        await client.write_registers(0xA118, float_words(40.0), device_id=2)
        percent = await client.read_holding_registers(0x0020, count=2, device_id=2)
        assert percent.registers[1] == 25600  # 80 % of 32000
        # Until the flow is past 20 SLPM by 20 sigma of noise, so that `before` is too.
        await transact_until(lambda: read_float(client, 0xA100, 2), lambda flow: flow > 21.0)
        before = sim.device("bronkhorst").true_flow()
        flow = await client.read_holding_registers(0xA100, count=2, device_id=2)
        percent = await client.read_holding_registers(0x0020, count=2, device_id=2)
        after = sim.device("bronkhorst").true_flow()
        assert before > 20.0
        assert before - 0.25 < as_float(flow.registers) < after + 0.25  # 5 sigma
        assert before - 0.25 < percent.registers[0] / 32000 * 50 < after + 0.25
        too_high = await client.write_register(0x0021, 33700, device_id=2)  # > 105 %
        assert too_high.isError() and too_high.exception_code == 3
    finally:
        client.close()


async def test_crc_errors_are_dropped_and_back_to_back_frames_all_answered(
    config: StationConfig, sim: SimStation
) -> None:
    framer = FramerRTU(DecodePDU(is_server=False))
    good = framer.buildFrame(ReadHoldingRegistersRequest(address=1208, count=2, dev_id=1))
    bad = good[:-1] + bytes([good[-1] ^ 0x55])
    fd = os.open(port_of(config), os.O_RDWR | os.O_NOCTTY)
    try:
        assert await exchange(fd, bad) == b""
        assert await exchange(fd, b"\x01\x03") == b""  # half a frame, then silence
        replies = await exchange(fd, good + good)
        assert len(replies) == 2 * 9
        used, pdu = framer.handleFrame(replies[:9], 0, 0)
        assert used == 9 and pdu is not None and len(pdu.registers) == 2
    finally:
        os.close(fd)
    assert sim.device("alicat").requests_served == 2


async def exchange(fd: int, frame: bytes, wait: float = 0.15) -> bytes:
    """Write raw bytes to the port and collect what comes back within `wait`."""
    os.write(fd, frame)
    return await asyncio.to_thread(_read_for, fd, wait)


def _read_for(fd: int, seconds: float) -> bytes:
    data = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            data += os.read(fd, 256)
    return data


# --- TCP transports ------------------------------------------------------------------


async def test_modbus_tcp_little_endian_generic(
    config: StationConfig, sim: SimStation
) -> None:
    client = await tcp_client(config, "tcp0")
    try:
        reply = await client.write_registers(102, float_words(150.0, "little"), device_id=1)
        assert not reply.isError()
        assert sim.device("generic_le").setpoint == pytest.approx(150.0)
        # Until the flow is past 50 SLPM by 10 sigma of noise, so that `before` is too.
        await transact_until(lambda: read_float(client, 100, 1, "little"),
                             lambda flow: flow > 52.0)
        before = sim.device("generic_le").true_flow()
        block = await client.read_holding_registers(100, count=4, device_id=1)
        after = sim.device("generic_le").true_flow()
        assert before > 50.0
        assert before - 1.0 < as_float(block.registers[:2], "little") < after + 1.0  # 5 sigma
        assert as_float(block.registers[2:], "little") == pytest.approx(150.0)
        assert not before - 1.0 < as_float(block.registers[:2], "big") < after + 1.0
    finally:
        client.close()


async def test_rtu_over_tcp(config: StationConfig, sim: SimStation) -> None:
    client = await tcp_client(config, "rtutcp0")
    try:
        await client.write_registers(1009, float_words(12.0), device_id=7)
        reply = await client.read_holding_registers(1200, count=12, device_id=7)
        assert not reply.isError()
        assert as_float(reply.registers[2:4]) == pytest.approx(14.7, abs=0.1)
        assert sim.device("over_tcp").setpoint == 12.0
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(1208, count=2, device_id=1)
    finally:
        client.close()


# --- faults --------------------------------------------------------------------------


async def neighbour_answers(client: AsyncModbusSerialClient) -> bool:
    """Whether the Bronkhorst, next to the Alicat on bus0, answers a read."""
    reply = await client.read_holding_registers(0xA100, count=2, device_id=2)
    return not reply.isError()


@pytest.mark.parametrize(
    ("fault", "kwargs"),
    [("no_reply", {}), ("bad_crc", {}), ("exception", {"code": 6}), ("exception", {}),
     ("slow", {"seconds": 0.3})],
)
async def test_faults_on_the_pty(
    config: StationConfig, sim: SimStation, fault: str, kwargs: dict[str, float]
) -> None:
    client = await serial_client(config)
    try:
        sim.device("alicat").set_fault(fault, **kwargs)
        if fault == "exception":
            reply = await client.read_holding_registers(1208, count=2, device_id=1)
            assert reply.isError() and reply.exception_code == kwargs.get("code", 4)
        else:
            with pytest.raises(ModbusIOException):
                await client.read_holding_registers(1208, count=2, device_id=1)
        neighbour = await client.read_holding_registers(0xA100, count=2, device_id=2)
        assert not neighbour.isError()  # the other device on the line is not affected
        sim.device("alicat").clear_fault()
        if fault == "slow":  # let the late reply go by
            await past_late_replies(sim, "bus0", lambda: neighbour_answers(client))
        assert not (await client.read_holding_registers(1208, count=2, device_id=1)).isError()
    finally:
        client.close()


async def test_faults_over_modbus_tcp(config: StationConfig, sim: SimStation) -> None:
    client = await tcp_client(config, "tcp0")
    try:
        sim.device("generic_le").set_fault("bad_crc")  # on TCP: a wrong transaction id
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(100, count=2, device_id=1)
        sim.device("generic_le").set_fault("exception", code=2)
        reply = await client.read_holding_registers(100, count=2, device_id=1)
        assert reply.isError() and reply.exception_code == 2
        with pytest.raises(ValueError, match="only to the 'slow'"):
            sim.device("generic_le").set_fault("no_reply", seconds=1)
    finally:
        client.close()


async def test_fault_from_the_config(tmp_path: Path) -> None:
    config = load_config(write_station(
        tmp_path, extra='[sim.mfcs.alicat]\nfault = "exception"\nfault_code = 11'))
    async with SimStation(config):
        client = await serial_client(config)
        try:
            reply = await client.read_holding_registers(1208, count=2, device_id=1)
            assert reply.isError() and reply.exception_code == 11
        finally:
            client.close()


# --- unplugging ----------------------------------------------------------------------


async def test_unplug_serial_removes_the_port_and_brings_back_a_new_pty(
    config: StationConfig, sim: SimStation
) -> None:
    before = os.readlink(port_of(config))
    old = await serial_client(config)
    unplug = asyncio.create_task(sim.line("bus0").unplug(0.3))
    await asyncio.wait_for(sim.line("bus0").unplugged.wait(), 5)
    assert not port_linked(config)
    with pytest.raises((ConnectionException, ModbusIOException)):
        await old.read_holding_registers(1208, count=2, device_id=1)
    old.close()
    await unplug
    assert os.readlink(port_of(config)) != before
    fresh = await serial_client(config)
    try:
        assert not (await fresh.read_holding_registers(1208, count=2, device_id=1)).isError()
    finally:
        fresh.close()


async def test_unplug_tcp_closes_the_listener(
    config: StationConfig, sim: SimStation
) -> None:
    settings = config.lines["tcp0"]
    unplug = asyncio.create_task(sim.line("tcp0").unplug(0.3))
    await asyncio.wait_for(sim.line("tcp0").unplugged.wait(), 5)
    with pytest.raises(OSError):
        _, writer = await asyncio.open_connection(settings.host, settings.tcp_port)
        writer.close()
    await unplug
    client = await tcp_client(config, "tcp0")
    try:
        assert not (await client.read_holding_registers(100, count=2, device_id=1)).isError()
    finally:
        client.close()


async def test_stop_removes_the_port_symlink(config: StationConfig) -> None:
    async with SimStation(config):
        assert port_linked(config)
    assert not port_linked(config)


# --- bus timing ----------------------------------------------------------------------


async def test_paced_line_runs_at_the_rs485_ceiling(tmp_path: Path) -> None:
    config = load_config(write_station(tmp_path, baudrate=19200))
    char_s = 11 / 19200  # 8E1
    expected = 50 * ((13 + 2 * 10) * char_s + 2 * 3.5 * char_s)
    async with SimStation(config, pace=True) as paced:
        client = await serial_client(config)
        try:
            await client.read_holding_registers(1200, count=10, device_id=1)  # warm up
            began = time.monotonic()
            for _ in range(50):
                reply = await client.read_holding_registers(1200, count=10, device_id=1)
                assert not reply.isError()
            elapsed = time.monotonic() - began
        finally:
            client.close()
        assert paced.line("bus0").transactions == 51
    # Pacing holds the line to its byte timing: never faster than the ceiling allows. A
    # loaded machine may be slower; the benchmark (benchmarks/bus_throughput.py) measures
    # how close to the ceiling it gets.
    assert expected * 0.9 <= elapsed < expected * 2


# --- command line --------------------------------------------------------------------


async def test_crf_sim_serves_until_sigterm_and_cleans_up(
    config: StationConfig, tmp_path: Path
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "acquisition.cli", "sim", "--config", str(tmp_path / "station.toml"),
        "--no-pace", "--seed", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    try:
        assert process.stdout is not None
        lines = [(await asyncio.wait_for(process.stdout.readline(), 15)).decode()
                 for _ in config.mfcs]
        assert lines[0].startswith("alicat profile=alicat unit=1 line=bus0")
        assert f"at={config.lines['tcp0'].endpoint}" in lines[2]
        client = await serial_client(config)
        try:
            assert not (await client.read_holding_registers(1208, count=2, device_id=1)).isError()
        finally:
            client.close()
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    assert not port_linked(config)


async def test_crf_sim_config_error_exits_2(tmp_path: Path) -> None:
    path = write_station(tmp_path, extra="[sim.mfcs.alicat]\nnoise = -1")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "acquisition.cli", "sim", "--config", str(path), "--duration", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode == 2
    assert f"{path}: sim.mfcs.alicat.noise:" in stderr.decode()
