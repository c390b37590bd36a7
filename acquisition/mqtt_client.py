"""The station's MQTT topics and a client built from the `[mqtt]` table (daemon and ctl)."""

from __future__ import annotations

from dataclasses import dataclass

import aiomqtt

from acquisition.config_tables import MqttConfig


@dataclass(frozen=True)
class Topics:
    """crf/<station>/... as listed in DESIGN §5."""

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

    def telemetry(self, device: str) -> str:
        return f"{self.base}/telemetry/{device}"

    def run_event(self, run_id: str) -> str:
        return f"{self.base}/run/{run_id}/event"

    def run_step(self, run_id: str) -> str:
        return f"{self.base}/run/{run_id}/step"

    def truth(self, run_id: str) -> str:
        return f"{self.base}/truth/{run_id}/step"


def make_client(config: MqttConfig, client_id: str, will: aiomqtt.Will | None = None,
                username: str | None = None, password: str | None = None) -> aiomqtt.Client:
    """A client for the configured broker; `username`/`password` override the config's."""
    tls = None
    if config.url.startswith("mqtts") or config.tls is not None:
        settings = config.tls
        tls = aiomqtt.TLSParameters(
            ca_certs=str(settings.ca) if settings and settings.ca else None,
            certfile=str(settings.cert) if settings and settings.cert else None,
            keyfile=str(settings.key) if settings and settings.key else None)
    return aiomqtt.Client(
        config.host, config.port, identifier=client_id,
        username=username if username is not None else config.username,
        password=password if password is not None else config.secret(),
        protocol=(aiomqtt.ProtocolVersion.V5 if config.protocol == "5"
                  else aiomqtt.ProtocolVersion.V311),
        will=will, keepalive=config.keepalive_s, timeout=10,
        tls_params=tls, tls_insecure=(config.tls.insecure if config.tls else None))
