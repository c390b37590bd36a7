"""Hostile MQTT clients against the daemon, through a real mosquitto: thousands of fuzzed
commands with MQTT 5 properties, unusable response topics, and failures of our own code.
The daemon must keep running and answering, answer every message on cmd/reply, and move
nothing."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from acquisition.config.station import StationConfig
from acquisition.daemon.daemon import Daemon
from acquisition.mqtt.client import MAX_TOPIC_BYTES, NO_DELAY, topic_problem
from acquisition.mqtt.commands import ACTIONS, MAX_DEPTH, MAX_PAYLOAD_BYTES
from acquisition.run.state import State
from simulators.station import SimStation
from tests.broker import Broker
from tests.stations import running_daemon, store_rows
from tests.test_mqtt import mqtt_table, no_gas
from tests.test_run import POINTS, plan_of

REPLY = "crf/test/cmd/reply"
ANSWERS = "fuzz/rt"  # every usable response topic of the fuzz is under this
FUZZ_MESSAGES = 2400
WINDOW = 40  # commands in flight: under mosquitto's 20 in flight + 1000 queued per client
SEED = 20261126
# Refusals found before the command is looked at (they win over a bad response topic).
PAYLOAD_CODES = {"too_large", "too_deep", "bad_json", "not_finite"}


@pytest.fixture
def config(make_config: Callable[..., StationConfig], broker: Broker) -> StationConfig:
    return make_config(extra=POINTS + mqtt_table(broker))


class Operator:
    """An MQTT 5 client that sends commands and collects what the daemon answers."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.replies: list[dict[str, Any]] = []  # on cmd/reply, in order
        self.answers: list[tuple[str, dict[str, Any]]] = []  # on response topics
        self.others: list[str] = []  # topics of anything else outside crf/test/
        self.online = asyncio.Event()
        self.changed = asyncio.Condition()
        self.task = asyncio.create_task(self._listen(), name="operator")

    async def _listen(self) -> None:
        async for message in self.client.messages:
            topic = str(message.topic)
            if topic == "crf/test/status":
                if json.loads(message.payload)["state"] == "online":  # type: ignore[arg-type]
                    self.online.set()
            elif topic == REPLY:
                self.replies.append(json.loads(message.payload))  # type: ignore[arg-type]
            elif topic.startswith(f"{ANSWERS}/"):
                self.answers.append((topic, json.loads(message.payload)))  # type: ignore[arg-type]
            elif not topic.startswith("crf/test/"):
                self.others.append(topic)
            async with self.changed:
                self.changed.notify_all()

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(10), self.changed:
            await self.changed.wait_for(condition)

    async def send(self, payload: bytes | str, properties: Properties | None = None) -> None:
        await self.client.publish("crf/test/cmd", payload, qos=1, properties=properties)

    async def ask(self, action: str, args: dict[str, Any] | None = None,
                  properties: Properties | None = None) -> dict[str, Any]:
        """Send a valid command and await its reply on cmd/reply."""
        command_id = f"op-{random.getrandbits(64):x}"
        await self.send(json.dumps({"id": command_id, "action": action, "args": args or {},
                                    "issued_at": time.time()}), properties)
        await self.until(lambda: any(r["id"] == command_id for r in self.replies))
        return next(r for r in self.replies if r["id"] == command_id)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def operator(broker: Broker) -> AsyncIterator[Operator]:
    async with broker.client(protocol=aiomqtt.ProtocolVersion.V5,
                             socket_options=[NO_DELAY]) as client:
        await client.subscribe("#", qos=1)  # one subscription: one copy of each message
        listener = Operator(client)
        try:
            yield listener
        finally:
            await listener.close()


@pytest.fixture
async def daemon(config: StationConfig, sim: SimStation, operator: Operator
                 ) -> AsyncIterator[Daemon]:
    """The daemon under test, yielded once its link is up (its status said online)."""
    async with running_daemon(config) as running:
        await asyncio.wait_for(operator.online.wait(), 10)
        yield running


def v5(response_topic: str | None = None, correlation: bytes | None = None) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    if response_topic is not None:
        properties.ResponseTopic = response_topic
    if correlation is not None:
        properties.CorrelationData = correlation
    return properties


# --- the fuzz ------------------------------------------------------------------------------

@dataclass
class Fuzz:
    """What was sent, to check the replies against."""

    sent: int = 0
    usable_topic: int = 0  # messages with a response topic the daemon may answer on
    may_succeed: set[str] = field(default_factory=set)  # ids of status/annotate, fresh
    bad_topic: set[str] = field(default_factory=set)  # ids sent with an unusable topic


# Printable text only in MQTT properties: mosquitto disconnects a client that sends NUL
# or control characters, and paho drops the connection on U+FEFF in a received property.
SAFE_TEXT = "abcXYZ019 _-./:é中😀"
FINE_TOPICS = [f"{ANSWERS}/{n}" for n in range(5)] + [f"{ANSWERS}/é/中"]
BAD_TOPICS = ["fuzz/#", "fuzz/+/x", "#", "+", "", f"{ANSWERS}/" + "x" * MAX_TOPIC_BYTES]
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]
HOSTILE = [None, True, 0, -1, -0.0, 1e308, 10 ** 400, 0.05, "", "P1", "NaN", "inf", "1e999",
           "\u0000", "\ud800", "../../etc/passwd", "x" * 6000, [], {}, [[[1]]],
           {"name": "s", "steps": [{"point": "P1", "rate": 0.05}]}, "2020-01-01T00:00:00Z",
           "9999-12-31T23:59:59+23:59", "0001-01-01T00:00:00-23:59"]
SAFE_ACTIONS = ["status", "annotate"]  # the only actions sent with a fresh issued_at
STALE = [1000.0, "2020-01-01T00:00:00Z", time.time() + 3600, "1700000000", None]
ARG_KEYS = ["point", "rate", "unit", "duration_s", "sequence", "reason", "text", "seed",
            "operator", "dut", "x"]


def _text(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(SAFE_TEXT) for _ in range(size))


def _value(rng: random.Random) -> Any:
    """A hostile JSON value; non-finite ones as a marker replaced after json.dumps."""
    if rng.random() < 0.2:
        return f"@@{rng.choice(NON_FINITE)}@@"
    return rng.choice(HOSTILE)


def _command(rng: random.Random, index: int, fuzz: Fuzz) -> tuple[str, bytes]:
    """A valid-looking command with hostile values; only status/annotate can succeed."""
    action = rng.choice([*ACTIONS, *SAFE_ACTIONS * 3, "launch", ""])
    command_id = f"f-{index}" if rng.random() < 0.9 else rng.choice(["", "x" * 65, "dup"])
    args = {key: _value(rng) for key in rng.sample(ARG_KEYS, rng.randint(0, 3))}
    if action == "annotate" and rng.random() < 0.5:
        args = {"text": _text(rng, rng.randint(1, 50))}
    fresh = action in SAFE_ACTIONS and rng.random() < 0.7
    issued_at = time.time() if fresh else rng.choice([*STALE, *HOSTILE, "@@NaN@@"])
    if fresh and action == "status" and rng.random() < 0.5:
        args = {}
    if fresh:
        fuzz.may_succeed.add(command_id)
    body: dict[str, Any] = {"id": command_id, "action": action, "args": args,
                            "issued_at": issued_at}
    if rng.random() < 0.1:
        body["extra"] = _value(rng)
    text = json.dumps(body)
    for name in NON_FINITE:  # JSON's non-standard constants and an overflowing number
        text = text.replace(f'"@@{name}@@"', name)
    return command_id, text.encode()


def _payload(rng: random.Random, index: int, fuzz: Fuzz) -> tuple[str | None, bytes]:
    """(the id the daemon can read, if any; the payload) of one fuzz message."""
    kind = rng.random()
    if kind < 0.55:
        return _command(rng, index, fuzz)
    if kind < 0.65:
        return None, rng.randbytes(rng.randint(0, 300))
    if kind < 0.72:  # a command broken by bytes that are not UTF-8
        _, payload = _command(rng, index, fuzz)
        cut = rng.randrange(len(payload))
        return None, payload[:cut] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"]) \
            + payload[cut:]
    if kind < 0.82:  # nesting, bare or inside a command
        depth = rng.choice([MAX_DEPTH, MAX_DEPTH + 1, 100, 1000, 5000, 30_000])
        opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
        value = opener * depth + "1" + closer * depth
        if rng.random() < 0.5:
            return None, value.encode()
        return f"f-{index}", (f'{{"id": "f-{index}", "action": "status", "args": {{"x": '
                              f'{value}}}, "issued_at": {time.time()}}}').encode()
    if kind < 0.87:  # huge: a string around the size limit, or megabytes
        size = rng.choice([MAX_PAYLOAD_BYTES - 200, MAX_PAYLOAD_BYTES + 1, 2_000_000])
        return f"f-{index}", json.dumps({"id": f"f-{index}", "action": "annotate",
                                         "args": {"text": "x" * size},
                                         "issued_at": time.time()}).encode()
    if kind < 0.93:  # a bare non-finite number or junk JSON
        return None, rng.choice([*NON_FINITE, "[NaN]", '{"id": 1}', "null", '"x"',
                                 "1" * 5000]).encode()
    return None, _text(rng, rng.randint(0, 200)).encode()


def _properties(rng: random.Random, payload: bytes, command_id: str | None,
                fuzz: Fuzz) -> Properties | None:
    if rng.random() < 0.3:
        return None
    properties = Properties(PacketTypes.PUBLISH)
    if rng.random() < 0.7:
        bad = rng.random() < 0.4
        properties.ResponseTopic = rng.choice(BAD_TOPICS if bad else FINE_TOPICS)
        if bad and command_id and command_id.startswith("f-"):
            fuzz.bad_topic.add(command_id)
        fuzz.usable_topic += not bad
    if rng.random() < 0.5:
        properties.CorrelationData = rng.randbytes(rng.randint(0, 64))
    if rng.random() < 0.3:
        properties.UserProperty = [(_text(rng, 5), _text(rng, rng.randint(0, 30)))
                                   for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.3:
        properties.ContentType = rng.choice(["application/json", _text(rng, 20)])
    try:  # the broker drops a client that declares UTF-8 and sends something else
        payload.decode("utf-8")
        properties.PayloadFormatIndicator = rng.choice([0, 1])
    except UnicodeDecodeError:
        properties.PayloadFormatIndicator = 0
    return properties


def fuzz_messages(fuzz: Fuzz) -> Iterator[tuple[bytes, Properties | None]]:
    rng = random.Random(SEED)
    for index in range(FUZZ_MESSAGES):
        command_id, payload = _payload(rng, index, fuzz)
        yield payload, _properties(rng, payload, command_id, fuzz)


async def test_fuzz_through_the_broker_never_stops_the_daemon(
    daemon: Daemon, operator: Operator, sim: SimStation, config: StationConfig
) -> None:
    fuzz = Fuzz()
    started = time.monotonic()
    for payload, properties in fuzz_messages(fuzz):
        await operator.until(lambda: len(operator.replies) >= fuzz.sent - WINDOW)
        await operator.send(payload, properties)
        fuzz.sent += 1
    final = await operator.ask("status")  # answered last: every fuzz reply came before it
    elapsed = time.monotonic() - started

    assert final["ok"] and final["result"]["state"] == "idle"
    assert fuzz.sent == FUZZ_MESSAGES and len(operator.replies) == FUZZ_MESSAGES + 1
    await operator.until(lambda: len(operator.answers) >= fuzz.usable_topic)
    assert len(operator.answers) == fuzz.usable_topic and operator.others == []
    replies = operator.replies[:-1]
    assert all(r["ok"] or r["error"]["code"] != "internal" for r in replies), \
        [r for r in replies if not r["ok"] and r["error"]["code"] == "internal"][:3]
    assert {r["id"] for r in replies if r["ok"]} <= fuzz.may_succeed
    codes = {r["error"]["code"] for r in replies if not r["ok"]}
    assert codes >= {"too_large", "too_deep", "bad_json", "not_finite", "bad_command",
                     "bad_args", "expired", "unknown_action", "bad_response_topic"}
    for reply in replies:
        if reply["id"] in fuzz.bad_topic:
            assert reply["error"]["code"] in PAYLOAD_CODES | {"bad_response_topic"}, reply
    assert not daemon.link.health()["internal_errors"]  # type: ignore[union-attr]
    assert daemon.link.connections == 1  # type: ignore[union-attr]  # never dropped
    assert daemon.scheduler.status.state is State.IDLE and no_gas(sim)
    assert store_rows(config, "SELECT count(*) FROM runs") == [(0,)]
    print(f"\n{len(replies)} replies to the fuzz in {elapsed:.1f} s")


# --- response topics ---------------------------------------------------------------------

@pytest.mark.parametrize("response_topic", BAD_TOPICS,
                         ids=["hash", "plus", "bare-hash", "bare-plus", "empty", "too-long"])
async def test_an_unusable_response_topic_is_refused_on_cmd_reply(
    daemon: Daemon, operator: Operator, config: StationConfig, response_topic: str
) -> None:
    refused = await operator.ask("annotate", {"text": "must not be noted"},
                                 v5(response_topic, b"req-1"))
    assert refused["ok"] is False and refused["error"]["code"] == "bad_response_topic"
    assert f"reply is on {REPLY} only" in refused["error"]["message"]
    answered = await operator.ask("status", properties=v5(f"{ANSWERS}/ok", b"req-2"))
    assert answered["ok"]
    await operator.until(lambda: len(operator.answers) >= 1)
    # Replies go out in order: nothing went to the bad topic before this answer.
    assert [topic for topic, _ in operator.answers] == [f"{ANSWERS}/ok"]
    assert operator.others == []
    assert store_rows(config, "SELECT count(*) FROM events WHERE kind = 'note'") == [(0,)]


@pytest.mark.parametrize(("topic", "problem"), [
    ("a/#", "wildcard"), ("a/+/b", "wildcard"), ("", "empty"), ("a\0b", "NUL"),
    ("a" * (MAX_TOPIC_BYTES + 1), "bytes long"), ("\ud800", "not UTF-8"), (b"a/b", "not text"),
], ids=["hash", "plus", "empty", "nul", "too-long", "surrogate", "bytes"])
def test_topic_problem_names_what_is_wrong(topic: object, problem: str) -> None:
    assert problem in (topic_problem(topic) or "")


@pytest.mark.parametrize("topic", ["crf/test/cmd/reply/alice", "é/中/😀", "$SYS/x",
                                   "a" * MAX_TOPIC_BYTES], ids=["reply", "unicode", "dollar",
                                                                "longest"])
def test_topic_problem_accepts_topics_one_can_publish_to(topic: str) -> None:
    assert topic_problem(topic) is None


# --- our own failures ----------------------------------------------------------------------

async def test_a_failure_while_executing_costs_one_command(
    daemon: Daemon, operator: Operator, config: StationConfig,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(action: str, args: object) -> dict[str, Any]:
        raise RuntimeError(f"boom in {action}")

    with monkeypatch.context() as patch:
        patch.setattr(daemon.commands, "_execute", broken)
        failed = await operator.ask("status")
    assert failed["ok"] is False and failed["id"].startswith("op-")
    assert failed["error"] == {"code": "internal", "message": "RuntimeError: boom in status"}
    assert (await operator.ask("status"))["ok"]
    health = daemon.link.health()  # type: ignore[union-attr]
    assert health["internal_errors"] == 1 and health["commands"] == 2
    assert health["last_error"]["error"] == "RuntimeError: boom in status"
    recorded = store_rows(config, "SELECT detail FROM events WHERE kind = 'command'"
                                  " AND json_extract(detail, '$.reply.error.code') = 'internal'")
    assert len(recorded) == 1


async def test_a_failure_outside_the_command_processor_is_answered_too(
    daemon: Daemon, operator: Operator, config: StationConfig,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> dict[str, Any]:
        raise ValueError("boom outside")

    with monkeypatch.context() as patch:
        patch.setattr(daemon.commands, "handle", broken)
        await operator.send(b'{"id": "lost"}')
        await operator.until(lambda: len(operator.replies) >= 1)
    assert operator.replies[0] == {"id": None, "ok": False, "error": {
        "code": "internal", "message": "ValueError: boom outside"}}
    assert (await operator.ask("status"))["ok"]  # the loop went on
    recorded = store_rows(config, "SELECT json_extract(detail, '$.payload') FROM events"
                                  " WHERE kind = 'command'"
                                  " AND json_extract(detail, '$.reply.error.code') = 'internal'")
    assert recorded == [('{"id": "lost"}',)]
    health = daemon.link.health()  # type: ignore[union-attr]
    assert json.loads(json.dumps(health)) == health
    assert health["internal_errors"] == 1 and health["commands_refused"] == 1


async def test_a_failure_during_a_run_aborts_it_safely(
    daemon: Daemon, operator: Operator, sim: SimStation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody knows what a command that failed in our code did (an estop half done?):
    the run is aborted, which makes everything it touched safe."""
    scheduler = daemon.scheduler
    await scheduler.start(plan_of(daemon.config, [{"point": "P1", "rate": 0.1, "hold_s": 60}]))
    await asyncio.wait_for(scheduler.until(lambda status: status.state is State.HOLDING), 10)
    assert not no_gas(sim)

    async def broken(action: str, args: object) -> dict[str, Any]:
        raise RuntimeError(f"boom in {action}")

    with monkeypatch.context() as patch:
        patch.setattr(daemon.commands, "_execute", broken)
        failed = await operator.ask("estop")
    assert failed["error"]["code"] == "internal"
    assert await asyncio.wait_for(scheduler.wait(), 10) is State.ABORTED
    assert "internal error handling command" in (scheduler.status.reason or "")
    assert no_gas(sim) and not sim.valve_open("V1")
