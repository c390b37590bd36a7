"""Fuzzed command payloads: always a reply, never a crash, never a movement."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acquisition.commands import ACTIONS, CommandProcessor
from acquisition.config import StationConfig
from acquisition.run_state import State
from simulators.station import SimStation
from tests.stations import running_daemon
from tests.test_run import POINTS

json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)

near_commands = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=70), "action": st.sampled_from([*ACTIONS, "launch"]),
     "args": st.dictionaries(st.sampled_from(["point", "rate", "unit", "duration_s",
                                              "sequence", "reason", "text", "seed", "x"]),
                             json_values, max_size=4),
     "issued_at": st.one_of(st.just("now"), st.floats(allow_nan=False), st.text())},
    optional={"extra": json_values})

payloads = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200),
    json_values.map(json.dumps),
    near_commands,
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
    assert processor.scheduler.state in (State.IDLE, State.ABORTED)
    assert all(device.setpoint == 0.0 for device in sim.devices.values())
