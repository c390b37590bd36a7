"""The daemon's MQTT link: status, live state, telemetry, run events, commands in.

Acquisition never waits on the broker. Telemetry is QoS 0, batched per device and rate
limited; run events and step results go through the SQLite outbox at QoS 1 and are marked
sent only when the broker acknowledged them, so a broker or Wi-Fi outage (or a daemon
restart) loses nothing: unsent rows are replayed in order on the next connection.
The link reconnects by itself with backoff. A last will marks the station offline.
Nothing a client publishes on the command topic can stop the link: every message gets a
reply on cmd/reply, a failure of ours included. `health()` says how the link is doing.
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
from acquisition.config.station import StationConfig
from acquisition.config.tables import MqttConfig
from acquisition.events import HealthSource
from acquisition.mqtt.client import AckedClient, Topics, make_client, topic_problem
from acquisition.mqtt.commands import CommandError, CommandProcessor, internal_error_reply
from acquisition.mqtt.dut_intake import ReportIntake
from acquisition.run.scheduler import Scheduler
from acquisition.run.state import FINAL
from acquisition.run.status import RunStatus, redact
from acquisition.samples.bus import SampleBus
from acquisition.store.store import Store, StoreError
from drivers.endpoint import Backoff
from drivers.sample import Sample

log = structlog.get_logger(__name__)

TELEMETRY_MAX_AGE_S = 10.0  # after an outage, older telemetry is not worth sending
STATE_REFRESH_S = 10.0  # republish an unchanged state this often
STOP_CHECK_S = 0.5  # every loop looks at `stopping` at least this often


class MqttLink:
    def __init__(self, config: StationConfig, store: Store, bus: SampleBus,
                 scheduler: Scheduler, commands: CommandProcessor,
                 station_health: HealthSource, reports: ReportIntake) -> None:
        assert config.mqtt is not None
        self.config = config
        self.station_health = station_health
        self.reports = reports
        self.mqtt: MqttConfig = config.mqtt
        self.topics = Topics(config.station)
        self.store = store
        self.scheduler = scheduler
        self.commands = commands
        self.telemetry = bus.subscribe("mqtt", max_batches=20_000)
        self.online = asyncio.Event()  # connected, and subscribed to commands
        self._transition = asyncio.Event()  # the run changed state: publish it now
        self._last_state = scheduler.status.state
        scheduler.subscribe(self._on_status)
        self.connections = 0
        self.outbox_sent = 0
        self.outbox_refused = 0  # refusals seen: a row refused on two connections counts twice
        self.last_refusal: dict[str, Any] | None = None
        self.commands_handled = 0
        self.commands_refused = 0  # replies with ok false, internal errors included
        self.internal_errors = 0
        self.last_error: dict[str, Any] | None = None  # an internal error or the link going down
        self.stopping = False  # as for the pollers: Python 3.11 can swallow a cancel
        self._outbox_wake = asyncio.Event()
        self.caught_up = asyncio.Event()  # every queued row went out (or was refused)

    # --- run events into the outbox ---------------------------------------------------------

    async def forward_event(self, kind: str, detail: dict[str, Any], run_id: str | None,
                            t_ns: int) -> None:
        """Queue a run event (QoS 1, store-and-forward); redacted while a run is blind."""
        if run_id is None:
            return
        message = {"run_id": run_id, "t_ns": t_ns, "kind": kind, "detail": detail}
        topic = (self.topics.run_step(run_id) if kind == "step.result"
                 else self.topics.run_event(run_id))
        status = self.scheduler.status
        this_blind_run = status.blind and status.run_id == run_id
        if this_blind_run and status.hidden:
            if self.mqtt.publish_truth and kind == "step.result":
                await self.store.enqueue(self.topics.truth(run_id), message)
            message = message | {"detail": redact(detail)}
        await self.store.enqueue(topic, message)
        if kind == "run.state" and detail.get("state") in FINAL and this_blind_run:
            await self.store.enqueue(self.topics.run_event(run_id), {
                "run_id": run_id, "t_ns": t_ns, "kind": "run.unblinded",
                "detail": {"steps": status.results_dict()}})
        self.caught_up.clear()
        self._outbox_wake.set()

    @property
    def connected(self) -> bool:
        return self.online.is_set()

    def health(self) -> dict[str, Any]:
        """Counters since the daemon started, JSON as they are (for the retained status)."""
        return {"connected": self.connected, "connections": self.connections,
                "outbox_sent": self.outbox_sent, "outbox_refused": self.outbox_refused,
                "last_refusal": self.last_refusal, "commands": self.commands_handled,
                "commands_refused": self.commands_refused,
                "internal_errors": self.internal_errors, "last_error": self.last_error,
                "dut_reports": self.reports.health()}

    def _error(self, text: str) -> None:
        self.last_error = {"t_ns": time.time_ns(), "error": text}

    # --- the connection ------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = Backoff(self.mqtt.reconnect_min_s, self.mqtt.reconnect_max_s)
        will = aiomqtt.Will(self.topics.status, json.dumps({"state": "offline"}), 1, True)
        while not self.stopping:
            try:
                async with make_client(self.mqtt, self.mqtt.client_id or
                                       f"crf-{self.config.station}", will) as client:
                    await self._connected(client)
                    backoff.reset()
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
                reason = str(errors.exceptions[0])
                log.warning("mqtt link down", reason=reason)
                self._error(f"link down: {reason}")
            finally:
                self.online.clear()
            await asyncio.sleep(backoff.next_delay())

    async def _connected(self, client: aiomqtt.Client) -> None:
        """Subscribe first, so that `connected` and the "online" status both mean that a
        command sent now is taken (one sent before the subscription would be lost)."""
        for topic in (self.topics.cmd, self.topics.dut_reports):
            if self.mqtt.protocol == "5":  # see a retained message as retained, live or not
                await client.subscribe(topic, options=SubscribeOptions(
                    qos=1, retainAsPublished=True))
            else:
                await client.subscribe(topic, qos=1)
        self.online.set()
        self.connections += 1
        log.info("mqtt link up", broker=self.mqtt.url, connection=self.connections)
        await self._publish_status(client)

    async def _publish_status(self, client: aiomqtt.Client) -> None:
        """The retained status: online, and every worker's counters (see `crf ctl status`)."""
        await client.publish(self.topics.status, json.dumps({
            "state": "online", "station": self.config.station, "software": __version__,
            "t_ns": time.time_ns(), "health": await self.station_health()}),
            qos=1, retain=True)

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """A clean stop publishes what the last will would have said."""
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            await client.publish(self.topics.status, json.dumps({"state": "offline"}),
                                 qos=1, retain=True, timeout=2)

    async def _drain_outbox(self, client: AckedClient) -> None:
        """Publish unsent outbox rows in order (all QoS 1), each marked sent on its PUBACK.

        A row the broker refuses (MQTT 5 PUBACK reason code >= 0x80, e.g. 0x87 when the
        ACL denies its topic) stays unsent, is logged and counted in `health()`, and is
        skipped for the rest of this connection so that the rows after it still go out;
        the next connection tries it again (first, in order), which delivers it once the
        broker's ACL allows it. Consumers de-duplicating by `seq` see the gap meanwhile.
        """
        last = 0  # per connection: a new one starts again from the oldest unsent row
        while not self.stopping:
            self._outbox_wake.clear()
            rows = await self.store.unsent(last)
            if not rows:
                self.caught_up.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STOP_CHECK_S):
                        await self._outbox_wake.wait()
                continue
            for seq, topic, payload, _qos in rows:
                reason = await client.publish_acked(topic, payload)
                last = seq
                if reason.is_failure:
                    self.outbox_refused += 1
                    self.last_refusal = {"seq": seq, "topic": topic, "reason": str(reason),
                                         "reason_code": reason.value, "t_ns": time.time_ns()}
                    log.warning("broker refused an outbox message; kept unsent, retried on "
                                "the next connection", seq=seq, topic=topic,
                                reason=str(reason), reason_code=hex(reason.value))
                    continue
                # Shielded: a stop arriving now must not leave an acknowledged row unsent
                # (it would go out again, a duplicate, after the next start).
                await asyncio.shield(self.store.mark_sent(seq))
                self.outbox_sent += 1

    async def _publish_telemetry(self, client: aiomqtt.Client) -> None:
        while not self.stopping:
            await asyncio.sleep(self.mqtt.telemetry_interval_s)
            horizon = time.time_ns() - int(TELEMETRY_MAX_AGE_S * 1e9)
            hidden = set(self.config.mfcs) if self.scheduler.status.hidden else set()
            by_device: dict[str, list[Sample]] = {}
            for sample in self.telemetry.take_all():
                if sample.t_ns >= horizon and sample.device not in hidden:
                    by_device.setdefault(sample.device, []).append(sample)
            for device, samples in by_device.items():
                await client.publish(self.topics.telemetry(device), json.dumps({
                    "device": device,
                    "samples": [[s.channel, s.t_ns, s.value, s.unit, s.quality.value]
                                for s in samples]}), qos=0)

    async def _publish_state(self, client: aiomqtt.Client) -> None:
        """The live run state at each transition, when its view changes (at most every
        `state_interval_s`) and every STATE_REFRESH_S; the retained
        status with the health counters every `mqtt.status_interval_s`."""
        last, last_sent, status_sent = "", 0.0, time.monotonic()
        while not self.stopping:
            if time.monotonic() - status_sent >= self.mqtt.status_interval_s:
                await self._publish_status(client)
                status_sent = time.monotonic()
            view = self.scheduler.snapshot(public=True)
            steady = json.dumps({k: v for k, v in view.items()
                                 if k not in ("phase_elapsed_s", "hold_elapsed_s", "eta_s")})
            now = time.monotonic()
            if steady != last or now - last_sent >= STATE_REFRESH_S:
                body = {"station": self.config.station, "t_ns": time.time_ns(), **view}
                await client.publish(self.topics.state, json.dumps(body), qos=1, retain=True)
                last, last_sent = steady, now
            with contextlib.suppress(TimeoutError):  # a transition goes out at once
                await asyncio.wait_for(self._transition.wait(), self.mqtt.state_interval_s)
            self._transition.clear()

    def _on_status(self, status: RunStatus) -> None:
        """Status subscriber: a new run state is published without waiting for the next
        `state_interval_s` (truth-so-far updates wait for it)."""
        if status.state is not self._last_state:
            self._last_state = status.state
            self._transition.set()

    async def _take_commands(self, client: aiomqtt.Client) -> None:
        messages = aiter(client.messages)
        while not self.stopping:
            try:
                async with asyncio.timeout(STOP_CHECK_S):
                    message = await anext(messages)
            except TimeoutError:
                continue
            topic = str(message.topic)
            if (dut_id := self.topics.dut_id_of(topic)) is not None:
                await self._take_report(client, dut_id, message)
                continue
            if topic != self.topics.cmd:
                continue
            try:
                await self._answer(client, message)
            except aiomqtt.MqttError:
                raise  # the link is down: reconnect
            except Exception as error:  # a bug costs this command, not the daemon (and its run)
                await self._answer_failure(client, message, error)

    async def _take_report(self, client: aiomqtt.Client, dut_id: str,
                           message: aiomqtt.Message) -> None:
        """A DUT report: stored or refused; the DUT gets the reply on its reply topic."""
        try:
            reply = await self.reports.take(dut_id, _payload(message), message.retain)
        except aiomqtt.MqttError:
            raise
        except StoreError:
            raise  # the daemon stops on a failing store; the DUT gets no reply
        except Exception as error:  # a bug costs this report, not the daemon
            log.exception("DUT report handling failed", dut_id=dut_id)
            reply = internal_error_reply(None, error)
        await client.publish(self.topics.dut_reply(dut_id), json.dumps(reply), qos=1)

    async def _answer(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        """Handle one command; reply on cmd/reply and, MQTT 5 request/response, also on the
        response topic with the correlation data, unless that topic is unusable: then the
        command is refused, with the reply on cmd/reply only."""
        request = message.properties
        response_topic = getattr(request, "ResponseTopic", None) if request else None
        problem = None if response_topic is None else topic_problem(response_topic)
        refusal = None if problem is None else CommandError(
            "bad_response_topic", f"response topic {str(response_topic)[:100]!r}: {problem}; "
                                  f"the reply is on {self.topics.reply} only")
        reply = await self.commands.handle(_payload(message), retained=message.retain,
                                           refusal=refusal)
        self._count(reply)  # before the reply: whoever reads it may ask for the counters
        text = json.dumps(reply)
        await client.publish(self.topics.reply, text, qos=1)
        if response_topic is not None and problem is None:
            properties = Properties(PacketTypes.PUBLISH)
            correlation = getattr(request, "CorrelationData", None)
            if correlation:
                properties.CorrelationData = correlation
            await client.publish(response_topic, text, qos=1, properties=properties)

    async def _answer_failure(self, client: aiomqtt.Client, message: aiomqtt.Message,
                              error: Exception) -> None:
        """Reply `internal` on cmd/reply to a command whose handling failed in our code, and
        record it, if the event log (which may be what failed) can take it."""
        log.exception("command handling failed")
        reply = internal_error_reply(None, error)
        try:
            await self.commands.record(_payload(message), message.retain, "mqtt", reply)
        except Exception:  # the reply below still tells the sender
            log.exception("could not record the failed command")
        self._count(reply)
        await client.publish(self.topics.reply, json.dumps(reply), qos=1)

    def _count(self, reply: dict[str, Any]) -> None:
        self.commands_handled += 1
        if not reply["ok"]:
            self.commands_refused += 1
            if reply["error"]["code"] == "internal":
                self.internal_errors += 1
                self._error(reply["error"]["message"])


def _payload(message: aiomqtt.Message) -> bytes | str:
    return message.payload if isinstance(message.payload, bytes | str) else b""
