"""An outbox message the broker refuses (MQTT 5 PUBACK 0x87, the shipped ACL denying its
topic) is not marked sent, does not hold back the messages after it, is tried again on
the next connection, and goes out once the ACL allows it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
import structlog

from acquisition.config.station import StationConfig
from acquisition.mqtt.client import NO_DELAY
from acquisition.mqtt.link import MqttLink
from simulators.station import SimStation
from tests.broker import Broker
from tests.stations import running_daemon, store_rows
from tests.test_mqtt import mqtt_table
from tests.test_run import POINTS

DENIED = "crf/test/notes"  # the shipped ACL lets the station write no such topic


class Monitor:
    """The test's superuser on crf/test/#: outbox messages by seq, and each "online"."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.by_seq: dict[int, str] = {}  # seq -> topic
        self.online = 0
        self.changed = asyncio.Condition()
        self.task = asyncio.create_task(self._listen(), name="monitor")

    async def _listen(self) -> None:
        async for message in self.client.messages:
            body = json.loads(message.payload)  # type: ignore[arg-type]
            if "seq" in body:
                self.by_seq[body["seq"]] = str(message.topic)
            elif str(message.topic) == "crf/test/status" and body["state"] == "online":
                self.online += 1
            async with self.changed:
                self.changed.notify_all()

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(15), self.changed:
            await self.changed.wait_for(condition)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def note(link: MqttLink, text: str) -> int:
    """Queue a run event through the link (allowed by the ACL); returns its seq."""
    await link.forward_event("note", {"text": text}, "r1", time.time_ns())
    return int((await link.store.query("SELECT max(seq) FROM outbox"))[0][0])


async def reconnect(broker: Broker, monitor: Monitor, connections: int) -> None:
    """Take the daemon's session over with its own client id, as a second station process
    would: the broker drops the daemon's connection and it comes back by itself."""
    async with broker.client("station", identifier="crf-test",
                             protocol=aiomqtt.ProtocolVersion.V5):
        pass
    await monitor.until(lambda: monitor.online >= connections)


def unsent_before(config: StationConfig, seq: int) -> list[tuple[Any, ...]]:
    """Unsent rows older than `seq`: once `seq` arrived, the drain (one row at a time, in
    order) is done with them."""
    return store_rows(config, "SELECT seq, topic FROM outbox WHERE sent_ns IS NULL"
                              " AND seq < ?", seq)


async def test_a_refused_outbox_message_stays_unsent_and_blocks_nothing(
    make_config: Callable[..., StationConfig], secured_broker: Broker
) -> None:
    broker = secured_broker
    config = make_config(extra=POINTS + mqtt_table(broker, username="station",
                                                  password="station-secret"))
    async with SimStation(config), broker.client(
            "monitor", protocol=aiomqtt.ProtocolVersion.V5, socket_options=[NO_DELAY]) as client:
        await client.subscribe("crf/test/#", qos=1)
        monitor = Monitor(client)
        try:
            with structlog.testing.capture_logs() as logs:
                async with running_daemon(config) as daemon:
                    link = daemon.link
                    assert link is not None
                    await monitor.until(lambda: monitor.online == 1)
                    before = await note(link, "before")
                    denied = await daemon.store.enqueue(DENIED, {"kind": "note"})
                    after = await note(link, "after")
                    await monitor.until(lambda: after in monitor.by_seq)
                    assert before in monitor.by_seq and denied not in monitor.by_seq
                    assert unsent_before(config, after) == [(denied, DENIED)]
                    health = link.health()
                    assert health["outbox_refused"] == 1 and health["outbox_sent"] >= 1
                    assert {k: v for k, v in health["last_refusal"].items() if k != "t_ns"} == {
                        "seq": denied, "topic": DENIED, "reason": "Not authorized",
                        "reason_code": 0x87}

                    # The next connection tries it again first, and goes on past it.
                    await reconnect(broker, monitor, 2)
                    marker = await note(link, "second connection")
                    await monitor.until(lambda: marker in monitor.by_seq)
                    assert link.health()["outbox_refused"] == 2
                    assert unsent_before(config, marker) == [(denied, DENIED)]

                    # Once the ACL lets the station write there, the next connection sends it.
                    with broker.acl_path.open("a", encoding="utf-8") as acl:
                        acl.write(f"\nuser station\ntopic write {DENIED}\n")
                    broker.reload()
                    await reconnect(broker, monitor, 3)
                    last = await note(link, "third connection")
                    await monitor.until(lambda: last in monitor.by_seq)
                    assert monitor.by_seq[denied] == DENIED
                    await asyncio.wait_for(link.caught_up.wait(), 10)  # its PUBACKs counted
                    assert unsent_before(config, last) == []
                    health = link.health()
                    assert health["outbox_refused"] == 2 and health["connections"] == 3
                    assert health["outbox_sent"] >= 4  # before, after, marker, denied
        finally:
            await monitor.close()
    refusals = [entry for entry in logs if entry["log_level"] == "warning"
                and entry.get("topic") == DENIED]
    assert len(refusals) == 2
    assert refusals[0]["reason"] == "Not authorized" and refusals[0]["reason_code"] == "0x87"
