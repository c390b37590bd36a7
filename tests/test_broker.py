"""The mosquitto test helper, and the shipped broker config and ACL against a real broker.

Mosquitto 2.0 neither refuses a SUBSCRIBE nor (for MQTT 3.1.1) reports a refused
PUBLISH: what it does is not deliver. So each ACL rule is checked by delivery: a
message that must not get through is followed by a sentinel from the same broker, and
the receiver must see the sentinel without having seen the message.
"""

from __future__ import annotations

import asyncio
import queue
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho
import pytest

from tests.broker import MONITOR, Broker, BrokerError, free_port

V5, V311 = aiomqtt.ProtocolVersion.V5, aiomqtt.ProtocolVersion.V311
T = "crf/test"  # the secured_broker fixture's station is "test"
SHIPPED = Path(__file__).resolve().parents[1] / "systemd" / "mosquitto"


async def probe_before_sentinel(client: aiomqtt.Client) -> bool:
    """True if the b"probe" payload arrives before the b"sentinel" one."""
    async with asyncio.timeout(3):
        async for message in client.messages:
            if message.payload == b"probe":
                return True
            if message.payload == b"sentinel":
                return False
    raise AssertionError("connection closed before the sentinel")


async def write_gets_through(broker: Broker, username: str, topic: str) -> bool:
    """Does a QoS 1 publish by `username` reach the monitor, who reads everything?"""
    async with broker.client(MONITOR[0]) as monitor, \
            broker.client(username, protocol=V5) as writer:
        await monitor.subscribe("#", qos=1)
        # Returns on PUBACK: mosquitto has routed the message, or dropped it, by then.
        await writer.publish(topic, b"probe", qos=1)
        await monitor.publish("sentinel", b"sentinel", qos=1)
        return await probe_before_sentinel(monitor)


# A topic each account may read, for the sentinel that ends a read check.
READABLE = {"station": f"{T}/cmd", "operator": f"{T}/status",
            "metrology": f"{T}/truth/sentinel", "dut": f"{T}/dut/dut/report"}


async def read_gets_through(broker: Broker, username: str, topic: str) -> bool:
    """Does `username`, subscribed to the whole station (crf/test/#), receive `topic`?"""
    async with broker.client(MONITOR[0]) as monitor, \
            broker.client(username, protocol=V5) as reader:
        await reader.subscribe(f"{T}/#", qos=1)
        await monitor.publish(topic, b"probe", qos=1)
        await monitor.publish(READABLE[username], b"sentinel", qos=1)
        return await probe_before_sentinel(reader)


# --- the helper, anonymous ---------------------------------------------------------


@pytest.mark.parametrize("protocol", [V5, V311], ids=["mqtt5", "mqtt311"])
async def test_publish_subscribe_roundtrip(broker: Broker, protocol: aiomqtt.ProtocolVersion
                                           ) -> None:
    async with broker.client(protocol=protocol) as sub, broker.client(protocol=protocol) as pub:
        await sub.subscribe(f"{T}/telemetry/#", qos=1)
        await pub.publish(f"{T}/telemetry/alicat0", b'{"flow": 1.5}', qos=1)
        async with asyncio.timeout(3):
            message = await anext(sub.messages)
    assert str(message.topic) == f"{T}/telemetry/alicat0"
    assert message.payload == b'{"flow": 1.5}'


async def test_retained_message_lives_only_as_long_as_the_broker(broker: Broker) -> None:
    async with broker.client() as pub:
        await pub.publish(f"{T}/status", b"online", qos=1, retain=True)
    async with broker.client() as late:
        await late.subscribe(f"{T}/status", qos=1)
        async with asyncio.timeout(3):
            message = await anext(late.messages)
        assert message.payload == b"online"
        assert message.retain
    await asyncio.to_thread(broker.restart)  # persistence off: nothing survives
    async with broker.client() as late:
        await late.subscribe(f"{T}/#", qos=1)
        await late.publish(f"{T}/sentinel", b"sentinel", qos=1)
        async with asyncio.timeout(3):
            message = await anext(late.messages)
        assert message.payload == b"sentinel"


async def test_restart_keeps_the_port_and_a_client_reconnects(broker: Broker) -> None:
    port, old_pid = broker.port, broker.pid
    client = broker.client(identifier="crf-test", protocol=V5)
    with pytest.raises(aiomqtt.MqttError):
        async with client:
            await client.subscribe(f"{T}/cmd", qos=1)
            await asyncio.to_thread(broker.restart)
            async with asyncio.timeout(3):
                await anext(client.messages)  # the connection drops: MqttError
    assert broker.running
    assert (broker.port, broker.host) == (port, "127.0.0.1")
    assert broker.pid != old_pid
    async with client:  # the same client, as a reconnect loop would
        await client.subscribe(f"{T}/cmd", qos=1)
        await client.publish(f"{T}/cmd", b"again", qos=1)
        async with asyncio.timeout(3):
            message = await anext(client.messages)
    assert message.payload == b"again"


def test_kill_stop_and_context_manager(tmp_path: Path) -> None:
    with Broker(tmp_path) as broker:
        pid = broker.pid
        assert pid is not None and broker.running
        broker.kill()
        assert not broker.running and broker.pid is None
        with pytest.raises(OSError):
            socket.create_connection((broker.host, broker.port), timeout=1).close()
        broker.start()
        assert broker.running and broker.pid != pid
    assert not broker.running
    with pytest.raises(OSError):
        socket.create_connection((broker.host, broker.port), timeout=1).close()
    assert "running" in broker.log_path.read_text()
    broker.stop()  # idempotent


def test_a_broker_that_cannot_start_says_why(tmp_path: Path) -> None:
    class Misconfigured(Broker):
        def config_text(self) -> str:
            return f"listener {self.port} {self.host}\nno_such_option true\n"

    with pytest.raises(BrokerError, match="no_such_option"):
        Misconfigured(tmp_path).start()


# --- secured: passwords ------------------------------------------------------------


async def test_secured_broker_refuses_bad_logins(secured_broker: Broker) -> None:
    for username, password in [(None, None), ("operator", "wrong"), ("nobody", "x")]:
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(secured_broker.host, secured_broker.port,
                                      username=username, password=password):
                pass
    async with secured_broker.client("operator"):
        pass


async def test_reload_picks_up_a_new_dut_account(secured_broker: Broker) -> None:
    """As in the README: add a DUT with mosquitto_passwd, reload, and it may report."""
    secured_broker.add_user("dut-7", "seven")
    secured_broker.reload()
    async with asyncio.timeout(5):
        while True:  # SIGHUP is handled asynchronously
            try:
                async with secured_broker.client("dut-7"):
                    break
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)
    assert await write_gets_through(secured_broker, "dut-7", f"{T}/dut/dut-7/report")
    assert not await write_gets_through(secured_broker, "dut-7", f"{T}/dut/dut/report")


# --- secured: the shipped ACL, rule by rule ------------------------------------------

WRITES = [
    ("station", f"{T}/status", True),
    ("station", f"{T}/state", True),
    ("station", f"{T}/telemetry/alicat0", True),
    ("station", f"{T}/run/r1/event", True),
    ("station", f"{T}/run/r1/step", True),
    ("station", f"{T}/cmd/reply", True),
    ("station", f"{T}/cmd/reply/ctl-42", True),  # an MQTT 5 response topic
    ("station", f"{T}/truth/r1/step", True),
    ("station", f"{T}/cmd", False),
    ("station", f"{T}/dut/d1/report", False),
    ("station", f"{T}/dut/d1/report/reply", True),
    ("station", "crf/other/status", False),  # another station's topics
    ("operator", f"{T}/cmd", True),
    ("operator", f"{T}/status", False),
    ("operator", f"{T}/cmd/reply", False),
    ("operator", f"{T}/run/r1/step", False),
    ("operator", f"{T}/truth/r1/step", False),
    ("operator", "crf/other/cmd", False),
    ("dut", f"{T}/dut/dut/report", True),  # its own report: the DUT id is its username
    ("dut", f"{T}/dut/d1/report", False),  # another DUT's
    ("dut", f"{T}/dut/dut/report/x", False),
    ("dut", f"{T}/dut/dut/report/reply", False),  # only the station answers
    ("dut", f"{T}/cmd", False),
    ("dut", f"{T}/status", False),
    ("dut", f"{T}/telemetry/alicat0", False),
    ("metrology", f"{T}/truth/r1/step", False),
    ("metrology", f"{T}/cmd", False),
]

READS = [
    ("station", f"{T}/cmd", True),
    ("station", f"{T}/dut/d1/report", True),
    ("station", f"{T}/status", False),
    ("station", f"{T}/state", False),
    ("station", f"{T}/cmd/reply", False),
    ("station", f"{T}/truth/r1/step", False),
    ("operator", f"{T}/status", True),
    ("operator", f"{T}/state", True),
    ("operator", f"{T}/telemetry/alicat0", True),
    ("operator", f"{T}/run/r1/event", True),
    ("operator", f"{T}/run/r1/step", True),
    ("operator", f"{T}/cmd/reply", True),
    ("operator", f"{T}/cmd/reply/ctl-42", True),
    ("operator", f"{T}/dut/d1/report", True),
    ("operator", f"{T}/truth/r1/step", False),  # blind tests stay blind
    ("operator", f"{T}/cmd", False),
    ("metrology", f"{T}/truth/r1/step", True),
    ("metrology", f"{T}/status", False),
    ("metrology", f"{T}/run/r1/step", False),
    ("metrology", f"{T}/cmd", False),
    ("dut", f"{T}/dut/dut/report", True),  # reads back its own report
    ("dut", f"{T}/dut/dut/report/reply", True),  # and the station's answer to it
    ("dut", f"{T}/dut/d1/report/reply", False),
    ("dut", f"{T}/run/r1/event", False),
    ("dut", f"{T}/dut/d1/report", False),
    ("dut", f"{T}/status", False),
    ("dut", f"{T}/state", False),
    ("dut", f"{T}/cmd", False),
    ("dut", f"{T}/truth/r1/step", False),
]


def _ids(cases: list[tuple[str, str, bool]]) -> list[str]:
    return [f"{user}-{'may' if ok else 'not'}-{topic.removeprefix('crf/')}"
            for user, topic, ok in cases]


@pytest.fixture(scope="module")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One secured broker for the rule tables (they publish nothing retained)."""
    with Broker(tmp_path_factory.mktemp("acl"), secured=True, station="test") as running:
        yield running


@pytest.mark.parametrize(("username", "topic", "allowed"), WRITES, ids=_ids(WRITES))
async def test_acl_write(acl_broker: Broker, username: str, topic: str, allowed: bool) -> None:
    assert await write_gets_through(acl_broker, username, topic) is allowed


@pytest.mark.parametrize(("username", "topic", "allowed"), READS, ids=_ids(READS))
async def test_acl_read(acl_broker: Broker, username: str, topic: str, allowed: bool) -> None:
    assert await read_gets_through(acl_broker, username, topic) is allowed


@pytest.mark.parametrize("protocol", [V5, V311], ids=["mqtt5", "mqtt311"])
async def test_denied_subscription_is_granted_but_never_delivers(
        secured_broker: Broker, protocol: aiomqtt.ProtocolVersion) -> None:
    """Mosquitto 2.0 grants any SUBSCRIBE; the ACL acts when a message is delivered."""
    async with secured_broker.client("operator", protocol=protocol) as operator, \
            secured_broker.client("station") as station:
        granted = await operator.subscribe(f"{T}/truth/#", qos=1)
        await operator.subscribe(f"{T}/status", qos=1)
        await station.publish(f"{T}/truth/r1/step", b"probe", qos=1)
        await station.publish(f"{T}/status", b"sentinel", qos=1)
        assert not await probe_before_sentinel(operator)
    assert [code.value for code in granted] == [1]  # "Granted QoS 1", not 0x87/0x80


@pytest.mark.parametrize(("protocol", "denied", "allowed"),
                         [(paho.MQTTv5, "Not authorized", "No matching subscribers"),
                          (paho.MQTTv311, "Success", "Success")], ids=["mqtt5", "mqtt311"])
def test_denied_publish_acknowledgement(secured_broker: Broker, protocol: int, denied: str,
                                        allowed: str) -> None:
    """A refused QoS 1 PUBLISH is still PUBACKed: with reason 0x87 in MQTT 5, as a plain
    success in 3.1.1. aiomqtt's publish() ignores the reason and returns normally (as
    the refused cases of test_acl_write show): only delivery tells."""
    acks: queue.Queue[tuple[int, str]] = queue.Queue()
    connected: queue.Queue[str] = queue.Queue()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=protocol)
    client.username_pw_set("operator", secured_broker.users["operator"])
    client.on_connect = lambda _c, _u, _f, code, _p: connected.put(str(code))
    client.on_publish = lambda _c, _u, mid, code, _p: acks.put((mid, str(code)))
    client.connect(secured_broker.host, secured_broker.port)
    client.loop_start()
    try:
        assert connected.get(timeout=3) == "Success"
        mid = client.publish(f"{T}/truth/r1/step", b"x", qos=1).mid
        assert acks.get(timeout=3) == (mid, denied)
        mid = client.publish(f"{T}/cmd", b"x", qos=1).mid  # allowed, nobody listening
        assert acks.get(timeout=3) == (mid, allowed)
    finally:
        client.disconnect()
        client.loop_stop()


# --- the shipped crf.conf -----------------------------------------------------------


def _self_signed(directory: Path, address: str) -> None:
    """ca.crt (also the server's certificate) and server.key for `address`."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", f"/CN={address}",
         "-addext", f"subjectAltName=IP:{address}",
         "-keyout", str(directory / "server.key"), "-out", str(directory / "server.crt")],
        check=True, capture_output=True)
    shutil.copy(directory / "server.crt", directory / "ca.crt")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl for a certificate")
async def test_shipped_config_runs_with_its_three_listeners(tmp_path: Path) -> None:
    """crf.conf as installed, with the site LAN moved to 127.0.0.2, free ports, tmp_path."""
    site, tls_port = "127.0.0.2", free_port()
    certs = tmp_path / "certs"
    certs.mkdir()
    _self_signed(certs, site)

    class Shipped(Broker):
        def config_text(self) -> str:
            text = (SHIPPED / "crf.conf").read_text()
            for installed, here in [("/etc/mosquitto/certs/", f"{certs}/"),
                                    ("/etc/mosquitto/crf.passwd", str(self.passwd_path)),
                                    ("/etc/mosquitto/crf.acl", str(self.acl_path)),
                                    ("192.168.50.10", site)]:
                assert installed in text
                text = text.replace(installed, here)
            text = re.sub(r"^listener 1883 ", f"listener {self.port} ", text, flags=re.M)
            text = re.sub(r"^listener 8883 ", f"listener {tls_port} ", text, flags=re.M)
            return text + self.runtime_config()

    tls = aiomqtt.TLSParameters(ca_certs=str(certs / "ca.crt"))
    with Shipped(tmp_path / "broker", secured=True, station="test") as broker:
        for host, port, tls_params in [("127.0.0.1", broker.port, None),
                                       (site, broker.port, None),
                                       (site, tls_port, tls)]:
            async with aiomqtt.Client(host, port, username="operator", protocol=V5,
                                      password=broker.users["operator"],
                                      tls_params=tls_params) as operator, \
                    broker.client(MONITOR[0]) as monitor:
                await operator.subscribe(f"{T}/#", qos=1)
                await operator.publish(f"{T}/status", b"probe", qos=1)  # the ACL is on
                await monitor.publish(f"{T}/status", b"sentinel", qos=1)
                assert not await probe_before_sentinel(operator)
        with pytest.raises(aiomqtt.MqttError):  # anonymous logins are refused
            async with aiomqtt.Client(site, broker.port):
                pass
    assert (broker.workdir / "mosquitto.db").exists()  # persistence on: saved at exit
    warnings = [line for line in broker.log_tail(1000).splitlines()
                if "Warning" in line and "run as root" not in line]
    assert not warnings  # e.g. an ACL pattern without %u
