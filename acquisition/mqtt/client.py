"""The station's MQTT topics, and a client built from the `[mqtt]` table (daemon and ctl)
that can tell a QoS 1 publish the broker took from one it refused."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.types import PayloadType
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from acquisition.config.tables import MqttConfig

MAX_TOPIC_BYTES = 1024  # a topic we publish to; MQTT allows 65535, no reply path needs that
# Nagle's algorithm holds a small packet back while an earlier one is unacknowledged: a
# reply or outbox row then waits for the peer's delayed ACK (up to 40 ms on Linux), which
# made each command cost ~20 ms against mosquitto; neither paho nor aiomqtt turns it off.
NO_DELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(frozen=True)
class Topics:
    """crf/<station>/...: the station's topics (the README lists them with their payloads)."""

    station: str

    @property
    def base(self) -> str:
        return f"crf/{self.station}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def cmd(self) -> str:
        return f"{self.base}/cmd"

    @property
    def reply(self) -> str:
        return f"{self.base}/cmd/reply"

    @property
    def dut_reports(self) -> str:
        """Every DUT's report topic (a subscription)."""
        return f"{self.base}/dut/+/report"

    def dut_id_of(self, topic: str) -> str | None:
        """The DUT id of a report topic, None for any other topic."""
        head, _, rest = topic.partition(f"{self.base}/dut/")
        dut_id, _, tail = rest.partition("/")
        return dut_id if not head and dut_id and tail == "report" else None

    def dut_reply(self, dut_id: str) -> str:
        return f"{self.base}/dut/{dut_id}/report/reply"

    def telemetry(self, device: str) -> str:
        return f"{self.base}/telemetry/{device}"

    def run_event(self, run_id: str) -> str:
        return f"{self.base}/run/{run_id}/event"

    def run_step(self, run_id: str) -> str:
        return f"{self.base}/run/{run_id}/step"

    def truth(self, run_id: str) -> str:
        return f"{self.base}/truth/{run_id}/step"


def topic_problem(topic: object) -> str | None:
    """Why `topic` (e.g. an MQTT 5 response topic a client sent) must not be published to,
    or None. paho raises ValueError on wildcards and on topics over 65535 bytes."""
    if not isinstance(topic, str):
        return "not text"
    try:
        size = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        return "not UTF-8"
    if size == 0:
        return "empty"
    if "+" in topic or "#" in topic:
        return "a wildcard (+ or #) is not a topic one can publish to"
    if "\0" in topic:
        return "contains NUL"
    if size > MAX_TOPIC_BYTES:
        return f"{size} bytes long, more than {MAX_TOPIC_BYTES}"
    return None


class AckedClient(aiomqtt.Client):
    """aiomqtt's client plus `publish_acked()`: a QoS 1 publish that says how the broker
    answered.

    aiomqtt 2.x's `publish()` returns when paho calls `on_publish` for the message id and
    drops the reason code paho passes with it, so a PUBACK that refuses the message (MQTT 5
    reason code >= 0x80; mosquitto answers 0x87 Not authorized to a publish its ACL denies)
    looks like a delivery. paho 2.x (callback API VERSION2, as aiomqtt sets it) calls
    `on_publish(client, userdata, mid, reason_code, properties)`; we wrap that callback: the
    message ids `publish_acked()` waits for get their reason code, every other goes on to
    aiomqtt. This reaches into aiomqtt's paho client (`_client`, as in aiomqtt 2.x, which
    pyproject pins). MQTT 3.1.1 has no reason codes: a refused publish reads as success.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acks: dict[int, asyncio.Future[ReasonCode]] = {}
        self._aiomqtt_on_publish = self._client.on_publish
        self._client.on_publish = self._on_publish_with_reason

    def _on_publish_with_reason(self, client: paho.Client, userdata: Any, mid: int,
                                reason_code: ReasonCode, properties: Properties) -> None:
        ack = self._acks.pop(mid, None)
        if ack is None:
            self._aiomqtt_on_publish(client, userdata, mid, reason_code, properties)
        elif not ack.done():
            ack.set_result(reason_code)

    async def publish_acked(self, topic: str, payload: PayloadType) -> ReasonCode:
        """Publish at QoS 1; return the broker's reason code (refused: `.is_failure`).
        Raises MqttError as `publish()` does when the message cannot go out or is not
        acknowledged within the client's timeout."""
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, f"could not publish to {topic}")
        ack = asyncio.get_running_loop().create_future()
        self._acks[info.mid] = ack  # a QoS 1 PUBACK cannot arrive before this: no await yet
        try:
            async with asyncio.timeout(self.timeout):
                return await ack
        except TimeoutError:
            raise aiomqtt.MqttError(f"no PUBACK for {topic}") from None
        finally:
            self._acks.pop(info.mid, None)


def make_client(config: MqttConfig, client_id: str, will: aiomqtt.Will | None = None,
                username: str | None = None, password: str | None = None) -> AckedClient:
    """A client for the configured broker; `username`/`password` override the config's."""
    tls = None
    if config.url.startswith("mqtts") or config.tls is not None:
        settings = config.tls
        tls = aiomqtt.TLSParameters(
            ca_certs=str(settings.ca) if settings and settings.ca else None,
            certfile=str(settings.cert) if settings and settings.cert else None,
            keyfile=str(settings.key) if settings and settings.key else None)
    return AckedClient(
        config.host, config.port, identifier=client_id,
        username=username if username is not None else config.username,
        password=password if password is not None else config.secret(),
        protocol=(aiomqtt.ProtocolVersion.V5 if config.protocol == "5"
                  else aiomqtt.ProtocolVersion.V311),
        will=will, keepalive=config.keepalive_s, timeout=10, socket_options=[NO_DELAY],
        tls_params=tls, tls_insecure=(config.tls.insecure if config.tls else None))
