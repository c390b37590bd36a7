"""The daemon's MQTT link: status, live state, telemetry, run events, commands in.

Acquisition never waits on the broker. Telemetry is QoS 0, batched per device and rate
limited; run events and step results go through the SQLite outbox at QoS 1 and are marked
sent only when the broker acknowledged them, so a broker or Wi-Fi outage (or a daemon
restart) loses nothing: unsent rows are replayed in order on the next connection.
The link reconnects by itself with backoff. A last will marks the station offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from acquisition import __version__
from acquisition.bus import SampleBus
from acquisition.commands import CommandProcessor
from acquisition.config import StationConfig
from acquisition.config_tables import MqttConfig
from acquisition.mqtt_client import Topics, make_client
from acquisition.run_state import FINAL
from acquisition.scheduler import Scheduler
from acquisition.store import Store
from drivers.sample import Sample

log = structlog.get_logger(__name__)

TELEMETRY_MAX_AGE_S = 10.0  # after an outage, older telemetry is not worth sending
STATE_REFRESH_S = 10.0  # republish an unchanged state this often
STOP_CHECK_S = 0.5  # every loop looks at `stopping` at least this often
# What would reveal a blind run's rate: targets, truths, and which MFC (its range) is used.
BLIND_KEYS = {"setpoint", "target", "target_kg_h", "truth_kg_h", "u_expanded_kg_h",
              "truth_so_far_kg_h", "mfc", "unit"}


class MqttLink:
    def __init__(self, config: StationConfig, store: Store, bus: SampleBus,
                 scheduler: Scheduler, commands: CommandProcessor) -> None:
        assert config.mqtt is not None
        self.config = config
        self.mqtt: MqttConfig = config.mqtt
        self.topics = Topics(config.station)
        self.store = store
        self.scheduler = scheduler
        self.commands = commands
        self.telemetry = bus.subscribe("mqtt", max_batches=20_000)
        self.connected = False
        self.connections = 0
        self.outbox_sent = 0
        self.stopping = False  # as for the pollers: Python 3.11 can swallow a cancel
        self._outbox_wake = asyncio.Event()

    # --- run events into the outbox ---------------------------------------------------------

    async def forward_event(self, kind: str, detail: dict[str, Any], run_id: str | None,
                            t_ns: int) -> None:
        """Queue a run event (QoS 1, store-and-forward); redacted while a run is blind."""
        if run_id is None:
            return
        message = {"run_id": run_id, "t_ns": t_ns, "kind": kind, "detail": detail}
        topic = (self.topics.run_step(run_id) if kind == "step.result"
                 else self.topics.run_event(run_id))
        if self._blind(run_id):
            if self.mqtt.publish_truth and kind == "step.result":
                await self.store.enqueue(self.topics.truth(run_id), message)
            message = message | {"detail": {k: v for k, v in detail.items()
                                            if k not in BLIND_KEYS}}
        await self.store.enqueue(topic, message)
        if kind == "run.state" and detail.get("state") in FINAL and self._was_blind(run_id):
            await self.store.enqueue(self.topics.run_event(run_id), {
                "run_id": run_id, "t_ns": t_ns, "kind": "run.unblinded",
                "detail": {"steps": {index: (truth.to_dict() if truth else None)
                                     for index, truth in self.scheduler.results.items()}}})
        self._outbox_wake.set()

    def _was_blind(self, run_id: str) -> bool:
        plan = self.scheduler.plan
        return plan is not None and plan.spec.blind and self.scheduler.run_id == run_id

    def _blind(self, run_id: str) -> bool:
        return self._was_blind(run_id) and self.scheduler.final_status is None

    # --- the connection ------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = self.mqtt.reconnect_min_s
        will = aiomqtt.Will(self.topics.status, json.dumps({"state": "offline"}), 1, True)
        while not self.stopping:
            try:
                async with make_client(self.mqtt, self.mqtt.client_id or
                                       f"crf-{self.config.station}", will) as client:
                    await self._connected(client)
                    backoff = self.mqtt.reconnect_min_s
                    try:
                        async with asyncio.TaskGroup() as group:
                            group.create_task(self._drain_outbox(client))
                            group.create_task(self._publish_telemetry(client))
                            group.create_task(self._publish_state(client))
                            group.create_task(self._take_commands(client))
                    except asyncio.CancelledError:
                        await self._goodbye(client)
                        raise
                    await self._goodbye(client)  # the loops end only when stopping
            except* aiomqtt.MqttError as errors:
                log.warning("mqtt link down", reason=str(errors.exceptions[0]),
                            retry_in_s=backoff)
            finally:
                self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.mqtt.reconnect_max_s)

    async def _connected(self, client: aiomqtt.Client) -> None:
        self.connected = True
        self.connections += 1
        log.info("mqtt link up", broker=self.mqtt.url, connection=self.connections)
        await client.publish(self.topics.status, json.dumps({
            "state": "online", "station": self.config.station, "software": __version__,
            "t_ns": time.time_ns()}), qos=1, retain=True)
        if self.mqtt.protocol == "5":  # see a retained command as retained, live or not
            await client.subscribe(self.topics.cmd,
                                   options=SubscribeOptions(qos=1, retainAsPublished=True))
        else:
            await client.subscribe(self.topics.cmd, qos=1)

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """A clean stop publishes what the last will would have said."""
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            await client.publish(self.topics.status, json.dumps({"state": "offline"}),
                                 qos=1, retain=True, timeout=2)

    async def _drain_outbox(self, client: aiomqtt.Client) -> None:
        last = 0
        while not self.stopping:
            self._outbox_wake.clear()
            rows = await self.store.unsent(last)
            if not rows:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STOP_CHECK_S):
                        await self._outbox_wake.wait()
                continue
            for seq, topic, payload, qos in rows:
                await client.publish(topic, payload, qos=qos)  # returns on PUBACK
                await self.store.mark_sent(seq)
                last = seq
                self.outbox_sent += 1

    async def _publish_telemetry(self, client: aiomqtt.Client) -> None:
        while not self.stopping:
            await asyncio.sleep(self.mqtt.telemetry_interval_s)
            horizon = time.time_ns() - int(TELEMETRY_MAX_AGE_S * 1e9)
            hidden = set(self.config.mfcs) if self._blind_now() else set()
            by_device: dict[str, list[Sample]] = {}
            for sample in self.telemetry.take_all():
                if sample.t_ns >= horizon and sample.device not in hidden:
                    by_device.setdefault(sample.device, []).append(sample)
            for device, samples in by_device.items():
                await client.publish(self.topics.telemetry(device), json.dumps({
                    "device": device,
                    "samples": [[s.channel, s.t_ns, s.value, s.unit, s.quality.value]
                                for s in samples]}), qos=0)

    def _blind_now(self) -> bool:
        run_id = self.scheduler.run_id
        return run_id is not None and self._blind(run_id)

    async def _publish_state(self, client: aiomqtt.Client) -> None:
        last, last_sent = "", 0.0
        while not self.stopping:
            view = self.scheduler.snapshot(public=True)
            steady = json.dumps({k: v for k, v in view.items()
                                 if k not in ("phase_elapsed_s", "hold_elapsed_s", "eta_s")})
            now = time.monotonic()
            if steady != last or now - last_sent >= STATE_REFRESH_S:
                body = {"station": self.config.station, "t_ns": time.time_ns(), **view}
                await client.publish(self.topics.state, json.dumps(body), qos=1, retain=True)
                last, last_sent = steady, now
            await asyncio.sleep(self.mqtt.state_interval_s)

    async def _take_commands(self, client: aiomqtt.Client) -> None:
        messages = aiter(client.messages)
        while not self.stopping:
            try:
                async with asyncio.timeout(STOP_CHECK_S):
                    message = await anext(messages)
            except TimeoutError:
                continue
            if str(message.topic) != self.topics.cmd:
                continue
            payload = message.payload if isinstance(message.payload, bytes | str) else b""
            reply = json.dumps(await self.commands.handle(payload, retained=message.retain))
            await client.publish(self.topics.reply, reply, qos=1)
            await self._answer_v5(client, message, reply)

    @staticmethod
    async def _answer_v5(client: aiomqtt.Client, message: aiomqtt.Message, reply: str) -> None:
        """MQTT 5 request/response: also answer on the response topic, with correlation."""
        request = message.properties
        topic = getattr(request, "ResponseTopic", None) if request else None
        if not topic:
            return
        properties = Properties(PacketTypes.PUBLISH)
        correlation = getattr(request, "CorrelationData", None)
        if correlation:
            properties.CorrelationData = correlation
        await client.publish(topic, reply, qos=1, properties=properties)
