"""MQTT against a real mosquitto: commands and every refusal, outbox store-and-forward,
broker outages mid-run, restarts with unsent rows, MQTT 5 response topics, blind runs."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from acquisition.config.station import StationConfig
from acquisition.daemon.daemon import Daemon
from acquisition.run.scheduler import Scheduler
from acquisition.run.state import State
from simulators.station import SimStation
from tests.broker import Broker
from tests.stations import store_rows
from tests.test_run import POINTS, plan_of, wait_for_state

FAST = ('{"settle_window_s": 0.3, "settle_timeout_s": 5, "hold_s": 0.6}')


def mqtt_table(broker: Broker, **extra: object) -> str:
    lines = [f'url = "mqtt://127.0.0.1:{broker.port}"', "telemetry_interval_s = 0.2",
             "state_interval_s = 0.2", "status_interval_s = 1.0", "reconnect_min_s = 1.0",
             "reconnect_max_s = 1.0"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n[mqtt]\n" + "\n".join(lines) + "\n"


@pytest.fixture
def config(make_config: Callable[..., StationConfig], broker: Broker) -> StationConfig:
    return make_config(extra=POINTS + mqtt_table(broker))


class Inbox:
    """What a client received, in order, and a way to await the message a test needs."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._arrived = asyncio.Condition()

    async def add(self, item: Any) -> None:
        self.items.append(item)
        async with self._arrived:
            self._arrived.notify_all()

    async def until(self, condition: Callable[[], bool], timeout_s: float = 10) -> None:
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(condition)


class Station:
    """A daemon in this process plus an operator's MQTT client."""

    def __init__(self, config: StationConfig, client: aiomqtt.Client) -> None:
        self.config = config
        self.client = client
        self.started_ns = time.time_ns()
        self.daemon = Daemon(config)
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.daemon.run(self.stop))
        self.replies: dict[str, dict[str, Any]] = {}
        self.inbox = Inbox()
        self.listener = asyncio.create_task(self._listen())

    @property
    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        return self.inbox.items

    async def _listen(self) -> None:
        async for message in self.client.messages:
            topic = str(message.topic)
            if topic == "crf/test/cmd" or not message.payload:
                continue  # our own commands, some of them deliberately not JSON
            body = json.loads(message.payload)  # type: ignore[arg-type]
            if topic.endswith("/cmd/reply"):
                self.replies[body.get("id")] = body
            await self.inbox.add((topic, body))

    async def ready(self) -> None:
        """Until this daemon said it is online (a retained status of an earlier one
        does not count)."""
        await self.inbox.until(lambda: any(
            topic == "crf/test/status" and body["state"] == "online"
            and body["t_ns"] >= self.started_ns for topic, body in self.messages))

    async def send(self, action: str | None = None, args: dict | None = None, *,
                   raw: bytes | str | None = None, command_id: str | None = None,
                   issued_at: object = None, retain: bool = False) -> dict[str, Any]:
        command_id = command_id or uuid.uuid4().hex
        if raw is not None:  # the station can only answer with the id it could read
            command_id = command_id if command_id in str(raw) else None
        payload = raw if raw is not None else json.dumps({
            "id": command_id, "action": action, "args": args or {},
            "issued_at": time.time() if issued_at is None else issued_at})
        await self.client.publish("crf/test/cmd", payload, qos=1, retain=retain)
        try:
            await self.inbox.until(lambda: command_id in self.replies, 5)
        except TimeoutError:
            raise AssertionError(f"no reply to {payload!r}") from None
        return self.replies.pop(command_id)

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)
        self.listener.cancel()
        await asyncio.gather(self.listener, return_exceptions=True)


@pytest.fixture
async def station(config: StationConfig, sim: SimStation, broker: Broker
                  ) -> AsyncIterator[Station]:
    async with aiomqtt.Client("127.0.0.1", broker.port,
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe("crf/test/#", qos=1)
        running = Station(config, client)
        await running.ready()
        try:
            yield running
        finally:
            await running.close()



async def step_reached(scheduler: Scheduler, index: int) -> None:
    """Until the run works on step `index` (0-based) or a later one."""
    await asyncio.wait_for(scheduler.until(
        lambda status: status.step is not None and status.step > index), 20)


def no_gas(sim: SimStation) -> bool:
    return all(device.setpoint == 0.0 for device in sim.devices.values())


async def test_status_state_and_telemetry(station: Station) -> None:
    wanted = {"crf/test/status", "crf/test/state", "crf/test/telemetry/alicat"}
    await station.inbox.until(lambda: wanted <= {topic for topic, _ in station.messages})
    status = [body for topic, body in station.messages if topic == "crf/test/status"]
    assert status[-1]["state"] == "online"
    telemetry = next(body for topic, body in station.messages
                     if topic == "crf/test/telemetry/alicat")
    assert {row[0] for row in telemetry["samples"]} >= {"flow", "pressure"}


async def test_health_counters_in_the_status_and_the_retained_status(
    station: Station, sim: SimStation
) -> None:
    reply = await station.send("status")
    health = reply["result"]["health"]
    assert health["lines"]["bus0"]["connected"] and health["lines"]["bus0"]["transactions"] > 0
    assert health["devices"]["alicat"]["polls"] > 0 and health["devices"]["alicat"]["fault"] is None
    assert health["safety"] == {"unconfirmed": {}, "late_confirmations": 0, "interlock_trips": 0}
    assert health["dropped_samples"] == {"recorder": 0, "mqtt": 0}
    assert health["store"] == {"outbox_backlog": health["store"]["outbox_backlog"],
                               "failure": None}
    assert health["mqtt"]["connected"] and health["mqtt"]["internal_errors"] == 0
    sim.device("bronkhorst").set_fault("no_reply")
    await station.inbox.until(lambda: any(
        topic == "crf/test/status" and body.get("health", {}).get("devices", {})
        .get("bronkhorst", {}).get("fault") == "timeout" for topic, body in station.messages),
        5)  # the retained status is refreshed with the counters every status_interval_s
    retained = [body for topic, body in station.messages if topic == "crf/test/status"][-1]
    assert retained["state"] == "online"
    assert "no valid reply" in retained["health"]["lines"]["bus0"]["last_error"]
    assert retained["health"]["mqtt"]["commands"] == 1  # the status command above
    assert retained["health"]["recorder"]["committed"] > 0
    sim.device("bronkhorst").clear_fault()


async def test_every_command_works(station: Station, sim: SimStation) -> None:
    status = await station.send("status")
    assert status["ok"] and status["result"]["state"] == "idle"
    note = await station.send("annotate", {"text": "cylinder 2 connected"})
    assert note["ok"]
    inline = {"name": "inline", "defaults": json.loads(FAST),
              "steps": [{"point": "P1", "rate": 0.05, "repeats": 3}]}
    started = await station.send("start", {"sequence": inline, "operator": "ops"})
    assert started["ok"] and started["result"]["steps"] == 3
    scheduler = station.daemon.scheduler
    await wait_for_state(scheduler, State.HOLDING)
    assert (await station.send("pause", {"reason": "walker on site"}))["ok"]
    await wait_for_state(scheduler, State.PAUSED)
    assert no_gas(sim)
    assert (await station.send("resume"))["ok"]
    await wait_for_state(scheduler, State.HOLDING)
    assert (await station.send("skip"))["ok"]
    assert (await station.send("abort", {"reason": "done"}))["ok"]
    assert await scheduler.wait() is State.ABORTED
    released = await station.send("release", {"point": "P1", "rate": 0.05, "duration_s": 1.5})
    assert released["ok"]
    await wait_for_state(scheduler, State.SETTLING)
    assert (await station.send("estop", {"reason": "test"}))["ok"]
    assert await scheduler.wait() is State.ABORTED
    assert no_gas(sim)
    notes = store_rows(station.config, "SELECT detail FROM events WHERE kind = 'note'")
    assert json.loads(notes[0][0]) == {"text": "cylinder 2 connected"}
    audited = store_rows(station.config, "SELECT count(*) FROM events WHERE kind = 'command'")
    assert audited[0][0] == 9


@pytest.mark.parametrize(("kwargs", "code", "words"), [
    ({"raw": "not json"}, "bad_json", "not JSON"),
    ({"raw": "[1, 2]"}, "bad_command", "JSON object"),
    ({"raw": json.dumps({"id": "x1", "action": "status"})}, "bad_command", "issued_at"),
    ({"action": "launch"}, "unknown_action", "unknown action 'launch'"),
    ({"action": "release", "args": {"point": "P1", "rate": -1, "duration_s": 5}}, "bad_args",
     "args.rate"),
    ({"action": "pause", "args": {"why": "x"}}, "bad_args", "args.why: unknown key"),
    ({"action": "start", "args": {"sequence": "nope"}}, "rejected", "no such sequence"),
    ({"action": "start", "args": {"sequence": "../../etc/passwd"}}, "bad_args", "not a path"),
    ({"action": "release", "args": {"point": "P1", "rate": 5, "duration_s": 5}}, "rejected",
     "above the limit of point 'P1'"),
    ({"action": "release", "args": {"point": "P1", "rate": 0.1, "duration_s": 99999}},
     "not_allowed", "max_manual_duration_s"),
    ({"action": "status", "issued_at": 1000.0}, "expired", "time-to-live"),
    ({"action": "status", "issued_at": "2020-01-01T00:00:00Z"}, "expired", "time-to-live"),
    ({"action": "status", "issued_at": time.time() + 3600}, "expired", "future"),
    ({"action": "pause"}, "not_allowed", "no run is active"),
    ({"action": "resume"}, "not_allowed", "nothing to resume"),
    ({"action": "status", "retain": True}, "retained", "retained"),
])
async def test_refusals_name_the_problem_and_move_nothing(
    station: Station, sim: SimStation, kwargs: dict, code: str, words: str
) -> None:
    reply = await station.send(command_id="x1" if "raw" in kwargs else None, **kwargs)
    assert reply["ok"] is False and reply["error"]["code"] == code, reply
    assert words in reply["error"]["message"]
    assert station.daemon.scheduler.status.state is State.IDLE and no_gas(sim)
    if kwargs.get("retain"):  # clear the retained command so it bothers no one else
        await station.client.publish("crf/test/cmd", b"", retain=True)


async def test_duplicate_id_is_refused_even_after_a_restart(
    config: StationConfig, station: Station, broker: Broker
) -> None:
    assert (await station.send("status", command_id="same-id"))["ok"]
    again = await station.send("status", command_id="same-id")
    assert again["error"]["code"] == "duplicate"
    await station.close()
    restarted = Station(config, station.client)
    await restarted.ready()
    try:
        assert (await restarted.send("status", command_id="same-id"))["error"]["code"] == \
            "duplicate"
    finally:
        await restarted.close()


async def test_mqtt5_response_topic_and_correlation_data(station: Station,
                                                         broker: Broker) -> None:
    properties = Properties(PacketTypes.PUBLISH)
    properties.ResponseTopic = "operators/alice/replies"
    properties.CorrelationData = b"req-42"
    async with aiomqtt.Client("127.0.0.1", broker.port,
                              protocol=aiomqtt.ProtocolVersion.V5) as alice:
        await alice.subscribe("operators/alice/replies", qos=1)
        await alice.publish("crf/test/cmd", json.dumps({
            "id": "v5", "action": "status", "issued_at": time.time()}), qos=1,
            properties=properties)
        async with asyncio.timeout(5):
            message = await anext(aiter(alice.messages))
    assert json.loads(message.payload)["id"] == "v5"  # type: ignore[arg-type]
    assert message.properties.CorrelationData == b"req-42"  # type: ignore[union-attr]


async def test_mqtt311_clients_are_answered_by_payload_id(station: Station,
                                                         broker: Broker) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port,
                              protocol=aiomqtt.ProtocolVersion.V311) as old:
        await old.subscribe("crf/test/cmd/reply", qos=1)
        await old.publish("crf/test/cmd", json.dumps({
            "id": "v311", "action": "status", "issued_at": time.time()}), qos=1)
        async with asyncio.timeout(5):
            async for message in old.messages:
                if json.loads(message.payload)["id"] == "v311":  # type: ignore[arg-type]
                    break


class Collector:
    """A consumer of the run topics as in the field: a persistent session (QoS 1 messages
    queued by the broker while it is away) that keeps reconnecting."""

    def __init__(self, broker: Broker, topic: str) -> None:
        self.broker = broker
        self.topic = topic
        self.inbox = Inbox()
        self.connected = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.broker.port, clean_session=False,
                                          identifier=f"collector-{id(self)}") as client:
                    await client.subscribe(self.topic, qos=1)
                    self.connected.set()
                    async for message in client.messages:
                        await self.inbox.add(json.loads(message.payload))  # type: ignore[arg-type]
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.05)  # the broker is down: try again soon

    @property
    def received(self) -> list[dict[str, Any]]:
        return self.inbox.items

    async def until_seqs(self, seqs: set[int]) -> None:
        """Until every message of these outbox seqs has arrived."""
        await self.inbox.until(lambda: set(self.by_seq()) >= seqs, 30)

    def by_seq(self) -> dict[int, dict[str, Any]]:
        return {message["seq"]: message for message in self.received}

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_broker_outage_mid_run_loses_nothing(
    make_config: Callable[..., StationConfig], persistent_broker: Broker
) -> None:
    broker = persistent_broker
    config = make_config(extra=POINTS + mqtt_table(broker))
    collector = Collector(broker, "crf/test/run/#")
    await collector.connected.wait()
    async with SimStation(config), aiomqtt.Client("127.0.0.1", broker.port) as client:
        await client.subscribe("crf/test/status", qos=1)
        station = Station(config, client)
        await station.ready()
        scheduler = station.daemon.scheduler
        steps = [{"point": "P1", "rate": 0.05 + 0.01 * i, "hold_s": 0.5} for i in range(6)]
        run_id = await scheduler.start(plan_of(config, steps))
        await step_reached(scheduler, 1)
        broker.stop()
        samples_before = store_rows(config, "SELECT count(*) FROM samples")[0][0]
        await step_reached(scheduler, 4)  # the run goes on without the broker
        assert not station.daemon.link.connected  # type: ignore[union-attr]
        assert store_rows(config, "SELECT count(*) FROM samples")[0][0] > samples_before + 20
        broker.start()
        assert await asyncio.wait_for(scheduler.wait(), 60) is State.COMPLETED
        queued = {seq for (seq,) in store_rows(
            config, "SELECT seq FROM outbox WHERE payload LIKE ?", f"%{run_id}%")}
        await collector.until_seqs(queued)
        await asyncio.wait_for(station.daemon.link.caught_up.wait(), 10)  # type: ignore[union-attr]
        connections = station.daemon.link.connections  # type: ignore[union-attr]
        station.listener.cancel()
        await station.close()
    await collector.close()
    delivered = collector.by_seq()
    assert set(delivered) == queued  # every message, once after de-duplication by seq
    results = [m for m in delivered.values() if m["kind"] == "step.result"]
    assert sorted(m["detail"]["step"] for m in results) == list(range(6))
    assert store_rows(config, "SELECT count(*) FROM outbox WHERE sent_ns IS NULL") == [(0,)]
    assert connections >= 2


async def test_unsent_outbox_rows_are_replayed_after_a_daemon_restart(
    config: StationConfig, sim: SimStation, broker: Broker
) -> None:
    broker.stop()
    daemon = Daemon(config)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await daemon.ready.wait()
    await daemon.scheduler.start(plan_of(config, [{"point": "P1", "rate": 0.05}]))
    assert await asyncio.wait_for(daemon.scheduler.wait(), 30) is State.COMPLETED
    stop.set()
    await task
    unsent = store_rows(config, "SELECT seq FROM outbox WHERE sent_ns IS NULL ORDER BY seq")
    assert len(unsent) >= 5
    broker.start()
    collector = Collector(broker, "crf/test/run/#")
    await collector.connected.wait()
    daemon = Daemon(config)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await collector.until_seqs({seq for (seq,) in unsent})
    await asyncio.wait_for(daemon.link.caught_up.wait(), 10)  # type: ignore[union-attr]
    stop.set()
    await task
    await collector.close()
    seqs = [message["seq"] for message in collector.received]
    assert seqs[: len(unsent)] == [seq for (seq,) in unsent]  # in order
    assert store_rows(config, "SELECT count(*) FROM outbox WHERE sent_ns IS NULL") == [(0,)]


async def test_last_will_marks_a_crashed_station_offline(
    config: StationConfig, sim: SimStation, broker: Broker, tmp_path: Any
) -> None:
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "acquisition.cli", "daemon", "--config",
        str(tmp_path / "station.toml"), stderr=asyncio.subprocess.DEVNULL)
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe("crf/test/status", qos=1)
            async with asyncio.timeout(15):
                async for message in client.messages:
                    if json.loads(message.payload)["state"] == "online":  # type: ignore[arg-type]
                        break
                process.kill()
                async for message in client.messages:
                    if json.loads(message.payload)["state"] == "offline":  # type: ignore[arg-type]
                        break
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def test_blind_run_hides_rates_until_it_ends(
    make_config: Callable[..., StationConfig], broker: Broker
) -> None:
    config = make_config(extra=POINTS + mqtt_table(broker, publish_truth=True))
    public = Collector(broker, "crf/test/run/#")
    truth = Collector(broker, "crf/test/truth/#")
    await public.connected.wait()
    await truth.connected.wait()
    states: list[dict[str, Any]] = []
    async with SimStation(config), aiomqtt.Client("127.0.0.1", broker.port) as client:
        await client.subscribe("crf/test/state")
        watcher = asyncio.create_task(_collect(client, states))
        daemon = Daemon(config)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        await daemon.ready.wait()
        await daemon.scheduler.start(plan_of(config, [{"point": "P1", "rate": 0.07},
                                                      {"point": "P1", "rate": 0.12}],
                                             blind=True))
        assert await asyncio.wait_for(daemon.scheduler.wait(), 30) is State.COMPLETED
        await public.inbox.until(lambda: any(m["kind"] == "run.unblinded"
                                             for m in public.received))
        await truth.inbox.until(lambda: len(truth.received) == 2)
        stop.set()
        await task
        watcher.cancel()
    await public.close()
    await truth.close()
    during = [s for s in states if s.get("step") and s["state"] != "completed"]
    assert during and not any({"target_kg_h", "target", "truth_so_far_kg_h", "mfc"} & s.keys()
                              for s in during)
    assert any(s.get("release_active") for s in during)
    text = json.dumps([m for m in public.received if m["kind"] != "run.unblinded"])
    assert "0.07" not in text and "0.12" not in text and "truth_kg_h" not in text
    assert '"mfc"' not in text
    unblinded = [m for m in public.received if m["kind"] == "run.unblinded"]
    assert len(unblinded) == 1 and len(unblinded[0]["detail"]["steps"]) == 2
    assert sorted(m["detail"]["target_kg_h"] for m in truth.received) == [0.07, 0.12]


async def _collect(client: aiomqtt.Client, into: list[dict[str, Any]]) -> None:
    async for message in client.messages:
        into.append(json.loads(message.payload))  # type: ignore[arg-type]


async def test_crf_ctl_through_the_secured_broker(
    make_config: Callable[..., StationConfig], secured_broker: Broker, tmp_path: Any
) -> None:
    import sys

    config = make_config(extra=POINTS + mqtt_table(secured_broker, username="station",
                                                  password="station-secret"))
    station_file = str(tmp_path / "station.toml")

    async def ctl(*args: str, user: str = "operator") -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "acquisition.cli", "ctl", "--config", station_file,
            "--username", user, "--password", f"{user}-secret", "--timeout", "3", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await process.communicate()
        return process.returncode or 0, out.decode(), err.decode()

    async with SimStation(config):
        daemon = Daemon(config)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        await asyncio.wait_for(daemon.link.online.wait(), 10)  # type: ignore[union-attr]
        try:
            code, out, _ = await ctl("status")
            assert code == 0 and json.loads(out)["state"] == "idle"
            assert json.loads(out)["health"]["safety"]["unconfirmed"] == {}
            code, _, err = await ctl("release", "P1", "9", "--duration", "5")
            assert code == 1 and "refused (rejected)" in err and "above the limit" in err
            code, _, err = await ctl("status", user="dut")  # a DUT may not command
            assert code == 3 and "no reply" in err
            assert daemon.scheduler.status.state is State.IDLE
        finally:
            stop.set()
            await task


async def test_crf_ctl_watch_follows_the_live_state(station: Station, tmp_path: Any) -> None:
    import sys

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "acquisition.cli", "ctl", "--config",
        str(tmp_path / "station.toml"), "watch", stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        async with asyncio.timeout(10):
            first = (await process.stdout.readline()).decode()
            await station.send("release", {"point": "P2", "rate": 0.2, "duration_s": 3})
            while "step 1/1  P2  0.2 kg/h" not in (line := (await process.stdout.readline())
                                                    .decode()):
                pass
    finally:
        process.terminate()
        await process.wait()
    assert first.strip() in ("station test: online", "[--------------------] run None idle")
    assert line.startswith("[--------------------] step 1/1  P2  0.2 kg/h  [bronkhorst]")


async def test_daemon_over_tls_with_the_broker_checked_against_a_ca(
    make_config: Callable[..., StationConfig], tmp_path: Any
) -> None:
    from tests.test_broker import _self_signed

    certs = tmp_path / "certs"
    certs.mkdir()
    _self_signed(certs, "127.0.0.1")

    class TlsBroker(Broker):
        def config_text(self) -> str:
            return (f"listener {self.port} {self.host}\ncafile {certs}/ca.crt\n"
                    f"certfile {certs}/server.crt\nkeyfile {certs}/server.key\n"
                    "allow_anonymous true\npersistence false\n" + self.runtime_config())

    with TlsBroker(tmp_path / "tls-broker") as broker:
        config = make_config(extra=POINTS + f"""
[mqtt]
url = "mqtts://127.0.0.1:{broker.port}"
[mqtt.tls]
ca = "{certs}/ca.crt"
""")
        sim = SimStation(config)  # devices to stop safely, or the stop waits for them
        await sim.start()
        daemon = Daemon(config)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        try:
            tls = aiomqtt.TLSParameters(ca_certs=str(certs / "ca.crt"))
            async with aiomqtt.Client("127.0.0.1", broker.port, tls_params=tls) as client:
                await client.subscribe("crf/test/status", qos=1)
                async with asyncio.timeout(10):
                    async for message in client.messages:
                        if json.loads(message.payload)["state"] == "online":  # type: ignore[arg-type]
                            break
        finally:
            stop.set()
            await task
            await sim.stop()
