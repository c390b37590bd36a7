"""Fuzzed command payloads: always a reply, never a crash, never a movement; hostile
values (NaN, infinities, deep nesting, huge payloads) refused with a code that says why."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acquisition.config.station import StationConfig
from acquisition.mqtt.commands import ACTIONS, MAX_DEPTH, MAX_PAYLOAD_BYTES, CommandProcessor
from acquisition.run.state import State
from simulators.station import SimStation
from tests.stations import running_daemon, store_rows
from tests.test_run import POINTS

json_values = st.recursive(  # floats include NaN and infinities: json.dumps writes them
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)

near_commands = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=70), "action": st.sampled_from([*ACTIONS, "launch"]),
     "args": st.dictionaries(st.sampled_from(["point", "rate", "unit", "duration_s",
                                              "sequence", "reason", "text", "seed", "x"]),
                             json_values, max_size=4),
     "issued_at": st.one_of(st.just("now"), st.floats(), st.text(),
                            st.sampled_from(["NaN", "inf", "-Infinity", "1e999"]))},
    optional={"extra": json_values})

nested = st.tuples(st.integers(1, 3 * MAX_DEPTH), st.sampled_from([("[", "]"), ('{"a":', "}")])
                   ).map(lambda n_pair: n_pair[1][0] * n_pair[0] + "0" + n_pair[1][1] * n_pair[0])

payloads = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    json_values.map(json.dumps),
    near_commands,
    nested,
    st.sampled_from(["[" * 100_000, "1e999", "-1e999", "NaN", '"' + "x" * MAX_PAYLOAD_BYTES + '"']),
)


@pytest.fixture
def config(make_config: Callable[..., StationConfig]) -> StationConfig:
    return make_config(extra=POINTS)


@pytest.fixture
async def processor(config: StationConfig, sim: SimStation) -> AsyncIterator[CommandProcessor]:
    async with running_daemon(config) as daemon:
        yield daemon.commands


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads, retained=st.booleans())
async def test_any_payload_gets_a_reply_and_moves_nothing(
    processor: CommandProcessor, sim: SimStation, payload: Any, retained: bool
) -> None:
    if isinstance(payload, dict):
        if payload["issued_at"] == "now":
            payload = payload | {"issued_at": time.time()}
        payload = json.dumps(payload)
    reply = await processor.handle(payload, retained=retained)
    assert set(reply) in ({"id", "ok", "result"}, {"id", "ok", "error"})
    if not reply["ok"]:
        assert reply["error"]["code"] and reply["error"]["message"]
        assert reply["error"]["code"] != "internal", reply
    assert processor.scheduler.status.state in (State.IDLE, State.ABORTED)
    assert all(device.setpoint == 0.0 for device in sim.devices.values())


def command(action: str = "status", args: str = "{}", issued_at: str | None = None) -> str:
    """A command's JSON text, so that a test can put in it what json.dumps would not."""
    return (f'{{"id": "c1", "action": "{action}", "args": {args}, '
            f'"issued_at": {issued_at or time.time()}}}')


RELEASE = '{{"point": "P1", "rate": {rate}, "duration_s": 5}}'


@pytest.mark.parametrize(("payload", "code", "words", "command_id"), [
    (command(issued_at="NaN"), "not_finite", "issued_at: NaN", "c1"),
    (command(issued_at="Infinity"), "not_finite", "issued_at: Infinity", "c1"),
    (command(issued_at="-Infinity"), "not_finite", "issued_at: -Infinity", "c1"),
    (command(issued_at="1e999"), "not_finite", "issued_at: Infinity", "c1"),
    (command(issued_at='"NaN"'), "bad_command", "finite number", "c1"),
    (command("release", RELEASE.format(rate="NaN")), "not_finite", "args.rate: NaN", "c1"),
    (command("release", RELEASE.format(rate="1e999")), "not_finite", "args.rate: Infinity",
     "c1"),
    (command("release", RELEASE.format(rate='"inf"')), "bad_args",
     "args.rate: Input should be a finite number", "c1"),
    (command("start", '{"sequence": {"steps": [{"rate": -Infinity}]}}'), "not_finite",
     "args.sequence.steps.0.rate: -Infinity", "c1"),
    (command(args='{"reason": "\\ud800"}'), "bad_json", "args.reason: a lone surrogate", "c1"),
    ('{"id": "\\udc00"}', "bad_json", "id: a lone surrogate", None),
    ("[" * 1000 + "]" * 1000, "too_deep", f"more than {MAX_DEPTH} levels", None),
    (command(args='{"x": ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}"), "too_deep", "levels",
     None),
    (command("annotate", '{"text": "' + "x" * MAX_PAYLOAD_BYTES + '"}'), "too_large",
     f"at most {MAX_PAYLOAD_BYTES}", None),
    (b'{"id": "c1", "action": "status\xff"}', "bad_json", "not UTF-8", None),
    ("1" * 5000, "bad_json", "not JSON", None),
], ids=["nan", "inf", "-inf", "1e999", "nan-string", "rate-nan", "rate-1e999", "rate-inf-string",
        "inline-sequence", "surrogate", "surrogate-id", "deep", "deep-args", "large", "not-utf8",
        "huge-int"])
async def test_hostile_values_are_refused_by_name(
    processor: CommandProcessor, sim: SimStation, payload: str | bytes, code: str, words: str,
    command_id: str | None
) -> None:
    reply = await processor.handle(payload)
    assert reply["ok"] is False and reply["error"]["code"] == code, reply
    assert words in reply["error"]["message"]
    assert reply["id"] == command_id  # whenever the payload could be read
    assert processor.scheduler.status.state is State.IDLE
    assert all(device.setpoint == 0.0 for device in sim.devices.values())


async def test_a_command_at_the_limits_is_taken(processor: CommandProcessor) -> None:
    """The limits leave room for real commands: 16 levels, and a note as long as allowed."""
    deepest = "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
    reply = await processor.handle(command("annotate", f'{{"text": "{"x" * 5000}"}}'))
    assert reply["ok"], reply
    reply = await processor.handle(command(args=f'{{"x": {deepest}}}'))
    assert reply["error"]["code"] == "bad_args", reply  # parsed: refused for its content


async def test_a_failure_of_our_own_is_answered_internal_and_recorded(
    processor: CommandProcessor, config: StationConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(action: str, args: object) -> dict[str, Any]:
        raise KeyError("lost")

    monkeypatch.setattr(processor, "_execute", broken)
    reply = await processor.handle(command())
    assert reply == {"id": "c1", "ok": False,
                     "error": {"code": "internal", "message": "KeyError: 'lost'"}}
    monkeypatch.undo()
    assert (await processor.handle(command().replace("c1", "c2")))["ok"]
    recorded = store_rows(config, "SELECT json_extract(detail, '$.reply.error.code') FROM events"
                                  " WHERE kind = 'command' ORDER BY id")
    assert recorded == [("internal",), (None,)]
