"""The daemon as a systemd Type=notify service: READY=1, WATCHDOG=1 only while acquisition
makes progress, STATUS lines, STOPPING=1 with the time its stop may take.

Each test plays the service manager: it binds the Unix datagram socket that
$NOTIFY_SOCKET names and reads what a real daemon (in this process, or a `crf daemon`
child) sends to it, with the simulated station on real ptys and TCP ports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from acquisition.config.station import StationConfig, load_config
from acquisition.daemon.notify import SystemdNotifier, watchdog_interval_s
from simulators.station import SimStation
from tests.stations import read_until, running_daemon

FEED_S = 0.25  # WATCHDOG_USEC = 2 * FEED_S: the daemon feeds every FEED_S
LINES_DEAD = "no Modbus line answered"  # the STATUS of a stall for that reason
Message = dict[str, str]


class ServiceManager:
    """systemd's end of the notify protocol: one bound datagram socket."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind("\0" + address[1:] if address.startswith("@") else address)
        self.socket.setblocking(False)

    async def receive(self) -> Message:
        data = await asyncio.get_running_loop().sock_recv(self.socket, 4096)
        return dict(line.split("=", 1) for line in data.decode().splitlines())

    async def until(self, wanted: Callable[[Message], bool], timeout_s: float = 10) -> Message:
        """The first message that satisfies `wanted`."""
        async with asyncio.timeout(timeout_s):
            while not wanted(message := await self.receive()):
                pass
        return message

    async def assert_no_feed(self, within_s: float) -> None:
        """Wait for a WATCHDOG=1 that must not come: any message in `within_s` is read."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                while True:
                    message = await self.receive()
                    assert "WATCHDOG" not in message, f"fed while stalled: {message}"

    def close(self) -> None:
        self.socket.close()


def feed(message: Message) -> bool:
    return message.get("WATCHDOG") == "1"


def status_has(text: str) -> Callable[[Message], bool]:
    return lambda message: text in message.get("STATUS", "")


@pytest.fixture
def systemd(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServiceManager]:
    """A service manager on an abstract socket, with a fast watchdog, in the environment."""
    manager = ServiceManager(f"@crf-test-{uuid.uuid4().hex}")
    monkeypatch.setenv("NOTIFY_SOCKET", manager.address)
    monkeypatch.setenv("WATCHDOG_USEC", str(int(2 * FEED_S * 1e6)))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield manager
    manager.close()


@pytest.fixture
async def station(config: StationConfig) -> AsyncIterator[SimStation]:
    async with SimStation(config) as sim:
        yield sim


async def test_fed_while_samples_flow_not_while_every_line_is_dead(
    config: StationConfig, station: SimStation, systemd: ServiceManager
) -> None:
    async with running_daemon(config) as daemon:
        ready = await systemd.until(lambda message: "READY" in message)
        assert ready["READY"] == "1" and "devices answering" in ready["STATUS"]
        committed = daemon.recorder.committed
        for _ in range(3):
            await systemd.until(feed)
        assert daemon.recorder.committed > committed  # fed while samples were recorded
        fed = await systemd.until(feed)
        assert "4/4 devices answering" in fed["STATUS"]
        assert "samples/s recorded" in fed["STATUS"]

        for line in config.lines:
            station.line(line).pull_cable()
        stalled = await systemd.until(status_has(LINES_DEAD))
        assert "WATCHDOG" not in stalled and stalled["STATUS"].startswith("STALLED")
        await systemd.assert_no_feed(within_s=6 * FEED_S)

        for line in config.lines:
            station.line(line).plug_cable()
        await systemd.until(feed)
    stopping = await systemd.until(lambda message: "STOPPING" in message)
    assert stopping["STOPPING"] == "1"
    extend = await systemd.receive()
    # The stop may take the safe-state wait plus two zeroing timeouts at the very least.
    least_s = config.safety.safe_wait_s + 2 * config.acquisition.zero_timeout_s
    assert int(extend["EXTEND_TIMEOUT_USEC"]) >= least_s * 1e6


async def test_one_dead_line_among_live_ones_keeps_the_feed(
    config: StationConfig, station: SimStation, systemd: ServiceManager
) -> None:
    async with running_daemon(config):
        await systemd.until(feed)
        station.line("bus0").pull_cable()  # alicat and bronkhorst fall silent
        await systemd.until(status_has("2/4 devices answering"))
        for _ in range(3):  # (a slow disk may hold a commit back: not what this is about)
            message = await systemd.until(lambda message: feed(message)
                                          or status_has(LINES_DEAD)(message))
            assert feed(message), message
        station.line("bus0").plug_cable()  # else the stop waits for them to be safe


async def test_a_station_without_devices_is_fed_while_its_loop_runs(
    tmp_path: Path, systemd: ServiceManager
) -> None:
    path = tmp_path / "station.toml"
    path.write_text(f'station = "bare"\n[storage]\npath = "{tmp_path / "store.sqlite"}"\n')
    async with running_daemon(load_config(path)):
        await systemd.until(lambda message: "READY" in message)
        for _ in range(3):
            message = await systemd.receive()
            assert feed(message) and "0/0 devices answering" in message["STATUS"], message


async def test_crf_daemon_process_notifies_ready_and_stopping(
    tmp_path: Path, station: SimStation, systemd: ServiceManager
) -> None:
    daemon = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "acquisition.cli", "daemon", "--config",
        str(tmp_path / "station.toml"), stderr=asyncio.subprocess.PIPE)
    try:
        await systemd.until(lambda message: "READY" in message, timeout_s=20)
        await systemd.until(feed)
        daemon.send_signal(signal.SIGTERM)  # systemctl stop
        await systemd.until(lambda message: "STOPPING" in message)
        await read_until(daemon.stderr, '"stopped"')
        assert await asyncio.wait_for(daemon.wait(), 20) == 0
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()


async def test_notifier_reaches_a_socket_by_path() -> None:
    with tempfile.TemporaryDirectory() as directory:  # short: a socket path has 107 bytes
        manager = ServiceManager(os.path.join(directory, "notify"))
        notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": manager.address})
        assert notifier is not None
        notifier.send("READY=1", "STATUS=two\nlines")
        assert await asyncio.wait_for(manager.receive(), 5) == {
            "READY": "1", "STATUS": "two lines"}
        notifier.close()
        manager.close()


async def test_notifier_outlives_a_missing_service_manager() -> None:
    address = f"@crf-test-{uuid.uuid4().hex}"
    notifier = SystemdNotifier(address)
    notifier.send("WATCHDOG=1")  # nobody listens: logged, not raised
    manager = ServiceManager(address)
    notifier.send("WATCHDOG=1")
    assert await asyncio.wait_for(manager.receive(), 5) == {"WATCHDOG": "1"}
    notifier.close()
    manager.close()


def test_no_notify_socket_no_notifier_and_the_watchdog_interval() -> None:
    assert SystemdNotifier.from_environment({}) is None
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000",
                                "WATCHDOG_PID": str(os.getpid())}) == 15.0
    # The watchdog is meant for another process (e.g. the one that started this one).
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000",
                                "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None
