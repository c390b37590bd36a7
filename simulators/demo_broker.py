"""The MQTT broker `crf demo` starts: the system's mosquitto when it is installed, else
amqtt (pure Python, installed with crf-daq), so the demo needs nothing from apt.

Either one is anonymous, bound to 127.0.0.1 on a free port, without persistence, and logs
to a file: nothing else on the machine can reach it, and two demos never share one.
amqtt speaks MQTT 3.1.1 only, so the station's `[mqtt] protocol` follows the broker.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

HOST = "127.0.0.1"
BROKERS = ("auto", "mosquitto", "amqtt")


class BrokerChoiceError(Exception):
    """The broker asked for cannot run here (the message says what to do)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def mosquitto_path() -> str | None:
    """mosquitto's executable: Debian installs it in /usr/sbin, often not on a user's PATH."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


@dataclass(frozen=True)
class BrokerPlan:
    """How to start the demo's broker, and what the station's `[mqtt]` table must say."""

    name: Literal["mosquitto", "amqtt"]
    argv: list[str]
    port: int
    protocol: Literal["5", "3.1.1"]

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"


def _mosquitto(executable: str, workdir: Path, port: int) -> BrokerPlan:
    lines = [f"listener {port} {HOST}", "allow_anonymous true", "persistence false",
             "log_dest stderr", "connection_messages true"]
    if os.geteuid() == 0:  # as root mosquitto would drop to user "mosquitto" otherwise
        lines.append("user root")
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return BrokerPlan("mosquitto", [executable, "-c", str(conf)], port, "5")


def _amqtt(workdir: Path, port: int) -> BrokerPlan:
    config = {"listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{port}"}},
              "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                          {"allow_anonymous": True}}}
    conf = workdir / "amqtt.yaml"  # JSON is YAML
    conf.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    argv = [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)]
    return BrokerPlan("amqtt", argv, port, "3.1.1")


def plan_broker(choice: str, workdir: Path) -> BrokerPlan:
    """The broker for `choice` (`auto`: mosquitto if installed, else amqtt), its config
    written into `workdir`. Raises BrokerChoiceError for mosquitto where there is none."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    executable = mosquitto_path()
    if choice == "amqtt" or (choice == "auto" and executable is None):
        return _amqtt(workdir, port)
    if executable is None:
        raise BrokerChoiceError("--broker mosquitto: mosquitto is not installed "
                                "(apt-get install mosquitto), or use --broker amqtt")
    return _mosquitto(executable, workdir, port)
