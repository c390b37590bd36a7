"""A real mosquitto broker for tests, and the `broker` / `secured_broker` fixtures.

Tests of the MQTT side talk to mosquitto itself rather than to a fake, so that QoS,
retained messages, last wills, reconnects and the shipped ACL behave as in the field.
Each broker gets its own directory, config, log and free port on 127.0.0.1, with
persistence off so that a restart starts from an empty broker.
Register the fixtures with `pytest_plugins = ["tests.broker"]` in tests/conftest.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiomqtt
import pytest

from tests.stations import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
ACL_TEMPLATE = Path(__file__).resolve().parents[1] / "systemd" / "mosquitto" / "crf.acl.template"
DEFAULT_USERS: dict[str, str] = {
    "station": "station-secret",
    "operator": "operator-secret",
    "dut": "dut-secret",
    "metrology": "metrology-secret",
}
# Test-only superuser, appended to the shipped ACL: it reads and writes everything, so a
# test can see what really got through (and publish the sentinels that end a wait).
MONITOR = ("monitor", "monitor-secret")
MONITOR_ACL = "\n# Test only (tests/broker.py): a superuser.\nuser monitor\ntopic readwrite #\n"
READY_TIMEOUT_S = 5.0


class BrokerError(RuntimeError):
    """mosquitto did not start (the message carries the end of its log)."""


class Broker:
    """One mosquitto process: anonymous, or secured with passwords and the shipped ACL.

    Files live in `workdir` (created): mosquitto.conf, mosquitto.log (the broker's
    stderr, appended across restarts) and, when secured, crf.passwd and crf.acl
    (the template with `station` substituted, plus the `monitor` superuser unless
    `monitor=False`). The port is fixed at construction so that `restart()` comes back
    on the same one.
    """

    host = "127.0.0.1"

    def __init__(self, workdir: Path, *, secured: bool = False, station: str = "test",
                 users: Mapping[str, str] | None = None, monitor: bool = True,
                 port: int | None = None, persistent: bool = False) -> None:
        if any(c in station for c in "/+#"):
            raise ValueError(f"station id {station!r} must not contain / + #")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.secured = secured
        self.persistent = persistent  # keep sessions and queued QoS 1 across restarts
        self.station = station
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        self.monitor = secured and monitor
        if self.monitor:
            self.users.setdefault(*MONITOR)
        self.port = port if port is not None else free_port()
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.passwd_path = self.workdir / "crf.passwd"
        self.acl_path = self.workdir / "crf.acl"
        self._proc: subprocess.Popen[bytes] | None = None
        if secured:
            self._write_security()
        self.conf_path.write_text(self.config_text(), encoding="utf-8")

    @property
    def url(self) -> str:
        """For a station config's `[mqtt] url`."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def config_text(self) -> str:
        """The mosquitto.conf to run; a subclass may return another (e.g. the shipped one)."""
        lines = [f"listener {self.port} {self.host}"]
        lines += ([f"persistence true\npersistence_location {self.workdir}/"]
                  if self.persistent else ["persistence false"])
        if self.secured:
            lines += ["allow_anonymous false", f"password_file {self.passwd_path}",
                      f"acl_file {self.acl_path}"]
        else:
            lines.append("allow_anonymous true")
        return "\n".join(lines) + "\n" + self.runtime_config()

    def runtime_config(self) -> str:
        """What any config needs to run here: logging to our log file, and file access."""
        lines = ["log_dest stderr", "log_type all", "connection_messages true"]
        if os.geteuid() == 0:
            # As root, mosquitto drops to user "mosquitto", which cannot read our tmp dir.
            lines.append("user root")
        return "\n".join(lines) + "\n"

    def _write_security(self) -> None:
        acl = ACL_TEMPLATE.read_text(encoding="utf-8").replace("@STATION@", self.station)
        if self.monitor:
            acl += MONITOR_ACL
        self.acl_path.write_text(acl, encoding="utf-8")
        self.passwd_path.unlink(missing_ok=True)
        for name, password in self.users.items():
            self.add_user(name, password)

    def add_user(self, name: str, password: str) -> None:
        """Add or change an account as an installer would; running brokers need `reload()`."""
        create = [] if self.passwd_path.exists() else ["-c"]
        subprocess.run([MOSQUITTO_PASSWD, *create, "-b", str(self.passwd_path), name, password],
                       check=True, capture_output=True)
        self.users[name] = password

    def start(self) -> None:
        """Start mosquitto and return once it accepts TCP connections."""
        if self.running:
            return
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf_path)], cwd=self.workdir,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self._proc.returncode}"
                                  f"\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    pass
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise BrokerError(f"mosquitto not listening on {self.host}:{self.port} "
                                      f"after {READY_TIMEOUT_S} s\n{self.log_tail()}") from None
                time.sleep(0.02)
                continue
            if self._proc.poll() is None:  # else it was some other process on our port
                return

    def stop(self) -> None:
        """SIGTERM and wait: a clean shutdown (clients see the connection close)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL and wait: a crash or power cut."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        """Stop, then start again on the same port with the same config."""
        self.stop()
        self.start()

    def reload(self) -> None:
        """SIGHUP, as `systemctl reload mosquitto`: re-reads the password and ACL files."""
        if self._proc is not None and self.running:
            self._proc.send_signal(signal.SIGHUP)

    def _end(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no broker log)"
        return "\n".join(text.splitlines()[-lines:])

    def client(self, username: str | None = None, **kwargs: Any) -> aiomqtt.Client:
        """An aiomqtt client for this broker, logged in as `username` (password looked up)."""
        if username is not None:
            kwargs.setdefault("username", username)
            kwargs.setdefault("password", self.users[username])
        return aiomqtt.Client(self.host, self.port, **kwargs)

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        mode = f"secured station={self.station}" if self.secured else "anonymous"
        return f"<Broker {self.host}:{self.port} {mode} pid={self.pid}>"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """An anonymous mosquitto on a free port, stopped after the test."""
    with Broker(tmp_path / "broker") as running:
        yield running


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[Broker]:
    """Like `broker`, but sessions and queued messages survive a stop/start, as in the field."""
    with Broker(tmp_path / "broker", persistent=True) as running:
        yield running


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[Broker]:
    """mosquitto with passwords and the shipped ACL for station "test" (as write_station)."""
    with Broker(tmp_path / "secured-broker", secured=True, station="test") as running:
        yield running


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Show the end of each broker's log under a failed test's report."""
    report = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, Broker):
                report.sections.append((f"mosquitto log ({name}, {value.log_path})",
                                        value.log_tail()))
    return report
