"""`crf ctl`: steer a station over MQTT, from the station config's `[mqtt]` table.

`crf ctl --config PATH ACTION ...` sends one command, waits for its reply and exits 0 on
an ok reply, 1 on an error reply, 3 when no reply came. `crf ctl watch` follows the
station's live state. Credentials: --username/--password, else CRF_MQTT_USERNAME /
CRF_MQTT_PASSWORD, else the config's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from typing import Any

import aiomqtt

from acquisition.cli.common import load_or_report
from acquisition.config.station import StationConfig
from acquisition.exit_codes import EXIT_CONFIG, EXIT_FAILED, EXIT_NO_REPLY
from acquisition.mqtt.client import Topics, make_client
from acquisition.run.status import progress_line

BAR_WIDTH = 20


def command_args(args: argparse.Namespace) -> dict[str, Any]:
    """The `args` object of the command, from the subcommand's options."""
    fields = {"start": ("sequence", "operator", "dut", "seed"),
              "release": ("point", "rate", "unit", "duration_s", "operator"),
              "annotate": ("text",)}.get(args.action, ("reason",))
    return {name: getattr(args, name) for name in fields
            if getattr(args, name, None) is not None}


def _client(config: StationConfig, args: argparse.Namespace) -> aiomqtt.Client:
    assert config.mqtt is not None
    return make_client(config.mqtt, f"crf-ctl-{uuid.uuid4().hex[:8]}",
                       username=args.username or os.environ.get("CRF_MQTT_USERNAME"),
                       password=args.password or os.environ.get("CRF_MQTT_PASSWORD"))


async def send(config: StationConfig, args: argparse.Namespace) -> int:
    topics = Topics(config.station)
    command = {"id": uuid.uuid4().hex, "action": args.action, "args": command_args(args),
               "issued_at": time.time()}
    async with _client(config, args) as client:
        await client.subscribe(topics.reply, qos=1)
        await client.publish(topics.cmd, json.dumps(command), qos=1)
        try:
            async with asyncio.timeout(args.timeout):
                async for message in client.messages:
                    reply = json.loads(message.payload)  # type: ignore[arg-type]
                    if reply.get("id") == command["id"]:
                        break
        except TimeoutError:
            print(f"no reply from station {config.station} within {args.timeout} s "
                  "(is the daemon running and connected?)", file=sys.stderr)
            return EXIT_NO_REPLY
    if reply["ok"]:
        print(json.dumps(reply["result"], indent=2))
        return 0
    error = reply["error"]
    print(f"refused ({error['code']}): {error['message']}", file=sys.stderr)
    return EXIT_FAILED


def bar(view: dict[str, Any]) -> str:
    steps = view.get("steps") or 0
    done = view.get("completed_steps", 0)
    filled = round(BAR_WIDTH * done / steps) if steps else 0
    return f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] "


async def watch(config: StationConfig, args: argparse.Namespace) -> int:
    topics = Topics(config.station)
    tty = sys.stdout.isatty()
    async with _client(config, args) as client:
        await client.subscribe(topics.state, qos=1)
        await client.subscribe(topics.status, qos=1)
        async for message in client.messages:
            view = json.loads(message.payload)  # type: ignore[arg-type]
            if str(message.topic) == topics.status:
                line = f"station {config.station}: {view.get('state')}"
            else:
                line = bar(view) + progress_line(view)
            print(f"\r\033[K{line}" if tty else line, end="" if tty else "\n", flush=True)
    return 0


def cmd_ctl(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    if config.mqtt is None:
        print(f"{args.config}: no [mqtt] table: this station has no broker", file=sys.stderr)
        return EXIT_CONFIG
    job = watch if args.action == "watch" else send
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(job(config, args))
    except aiomqtt.MqttError as error:
        print(f"cannot reach the broker {config.mqtt.url}: {error}", file=sys.stderr)
        return EXIT_NO_REPLY
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ctl = commands.add_parser("ctl", help="steer a station over MQTT")
    ctl.add_argument("--config", required=True, help="station TOML file (its [mqtt] table)")
    ctl.add_argument("--username")
    ctl.add_argument("--password")
    ctl.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a reply")
    actions = ctl.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser("start", help="start a sequence")
    start.add_argument("sequence", help="sequence name on the station")
    start.add_argument("--operator")
    start.add_argument("--dut")
    start.add_argument("--seed", type=int)
    for name, text in (("pause", "pause the run (gas off)"), ("skip", "skip the current step"),
                       ("abort", "abort the run"), ("estop", "emergency stop: all gas off")):
        actions.add_parser(name, help=text).add_argument("--reason")
    actions.add_parser("resume", help="resume a paused run")
    actions.add_parser("status", help="where the station is")
    release = actions.add_parser("release", help="manual release for a bounded time")
    release.add_argument("point")
    release.add_argument("rate", type=float)
    release.add_argument("--unit", default="kg/h")
    release.add_argument("--duration", dest="duration_s", type=float, required=True,
                         help="seconds; the release ends by itself")
    release.add_argument("--operator")
    actions.add_parser("annotate", help="add a note to the record").add_argument("text")
    actions.add_parser("watch", help="follow the live state")
    ctl.set_defaults(func=cmd_ctl)
