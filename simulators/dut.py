"""A simulated device under test: follows the station's public run events over MQTT and,
when a hold window ends, reports the release it "measured" in it, as a DUT team would.

It knows the truth because it is part of the simulator (the MFCs' true flow at the
release points, sampled while the run holds) and spoils it as `[sim.dut.<id>]` says:
a relative bias, noise, a position off by a distance in a random direction, missed
releases, false positives on blanks. So the station's report intake, the matching of
reports to steps and a DUT team's dry run can be rehearsed without a DUT or any gas.

The run events are public even in blind runs (no rates in them): the DUT learns from
them only when a hold starts and ends, and which step and point it was.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import numpy as np
import structlog

from acquisition.config.tables import MqttConfig
from acquisition.geodesy import offset_to_degrees
from acquisition.mqtt.client import AckedClient, Topics, make_client
from drivers.endpoint import Backoff
from simulators.plume import Source
from simulators.settings import DutSim

log = structlog.get_logger(__name__)

SAMPLE_PERIOD_S = 0.1  # the true release is sampled this often while the run holds
NOTHING_KG_H = 1e-4  # a true mean below this is a blank: nothing was released
MAX_T_NS = 2**63 - 1  # beyond this a stamp cannot be a date


@dataclass(frozen=True)
class RunState:
    """The part of a `run.state` event the DUT uses."""

    run_id: str
    state: str
    t_ns: int  # the station's stamp, or when it arrived if the event had none
    seq: int | None
    step: int | None
    point: str | None


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def run_state(payload: object) -> RunState | None:
    """A `run.state` event as the station publishes it; None for any other payload
    (another kind, not JSON, the wrong shape), which the DUT ignores."""
    try:
        message = json.loads(payload)  # type: ignore[arg-type]  # checked by json itself
    except (TypeError, ValueError, RecursionError):
        return None
    if not isinstance(message, dict) or message.get("kind") != "run.state":
        return None
    detail, run_id = message.get("detail"), message.get("run_id")
    if not (isinstance(detail, dict) and isinstance(run_id, str)
            and isinstance(detail.get("state"), str)):
        return None
    t_ns = _integer(message.get("t_ns"))
    point = detail.get("point")
    return RunState(run_id, detail["state"],
                    t_ns if t_ns is not None and 0 < t_ns <= MAX_T_NS else time.time_ns(),
                    _integer(message.get("seq")), _integer(detail.get("step")),
                    point if isinstance(point, str) else None)


def iso_utc(t_ns: int) -> str:
    """ISO 8601 with its offset, to the microsecond (what the station's intake keeps):
    2026-11-26T01:02:03.123456+00:00."""
    seconds, ns = divmod(t_ns, 10**9)
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC) + dt.timedelta(microseconds=ns // 1000)
    return stamp.isoformat(timespec="microseconds")


@dataclass
class HoldWindow:
    """One hold as the DUT observed it: when it began and the release sampled since."""

    run_id: str
    step: int | None
    point: str | None  # the step's point, as the event named it
    start_ns: int
    # (when, kg/h from every point) per sample: the hold's end is known only later, from
    # the station's stamp on the next event, and what came after it is not the hold's
    totals: list[tuple[int, float]] = field(default_factory=list)
    by_point: dict[str, float] = field(default_factory=dict)  # kg/h summed over samples
    places: dict[str, tuple[float, float]] = field(default_factory=dict)

    def add(self, sources: Sequence[Source]) -> None:
        self.totals.append((time.time_ns(), sum(source.rate_kg_h for source in sources)))
        for source in sources:
            self.by_point[source.point] = self.by_point.get(source.point, 0.0) + source.rate_kg_h
            self.places[source.point] = (source.latitude, source.longitude)

    def mean_kg_h(self, end_ns: int) -> float:
        """The mean release over the hold, up to its end."""
        held = [rate for t_ns, rate in self.totals if t_ns <= end_ns]
        return sum(held) / len(held) if held else 0.0

    def where(self) -> tuple[float, float] | None:
        """Where the gas came from: the point that released most; on a blank, the step's."""
        flowing = [(rate, point) for point, rate in self.by_point.items() if rate > 0]
        point = max(flowing)[1] if flowing else self.point
        return self.places.get(point) if point is not None else None


class SimulatedDut:
    """One DUT on the station's broker; `sources` says what the station releases now."""

    def __init__(self, dut_id: str, station: str, mqtt: MqttConfig, settings: DutSim,
                 sources: Callable[[], Sequence[Source]], rng: np.random.Generator) -> None:
        self.dut_id = dut_id
        self.mqtt = mqtt
        self.settings = settings
        self.sources = sources
        self.rng = rng
        topics = Topics(station)
        self.events_topic = topics.run_event("+")
        self.report_topic = f"{topics.base}/dut/{dut_id}/report"
        self.window: HoldWindow | None = None
        self.connections = 0
        self.events = 0  # run.state events taken (not those repeated by seq, nor other kinds)
        self.reports: list[dict[str, Any]] = []  # published and acknowledged
        self.refused = 0  # reports the broker refused (its ACL): dropped, not retried
        self.last_error: str | None = None
        self._pending: list[dict[str, Any]] = []  # ready, not yet acknowledged
        self._last_seq: tuple[str, int] | None = None
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []

    def describe(self) -> str:
        return f"dut broker={self.mqtt.url} reports={self.report_topic}"

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._connect(), name=f"sim dut {self.dut_id}"),
                       asyncio.create_task(self._sample(), name=f"sim dut {self.dut_id} flow")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks = []

    async def until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds; checked now and after every connection, event,
        sample of the release and report, so that a test awaits the DUT instead of sleeping."""
        async with self._changed:
            await self._changed.wait_for(condition)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- the broker ------------------------------------------------------------------------

    async def _connect(self) -> None:
        """Stay connected: subscribe to the run events, send what is pending, follow."""
        backoff = Backoff(self.mqtt.reconnect_min_s, self.mqtt.reconnect_max_s)
        while True:
            try:
                async with make_client(self.mqtt, f"crf-sim-dut-{self.dut_id}",
                                       username=self.settings.username,
                                       password=self.settings.password) as client:
                    await client.subscribe(self.events_topic, qos=1)
                    backoff.reset()
                    self.connections += 1
                    log.info("sim dut connected", dut=self.dut_id, broker=self.mqtt.url)
                    await self._notify()
                    await self._send(client)
                    async for message in client.messages:
                        if (event := run_state(message.payload)) is not None:
                            self._take(event)
                            await self._send(client)
                        await self._notify()
            except aiomqtt.MqttError as error:
                self.last_error = str(error)
                log.warning("sim dut disconnected", dut=self.dut_id, error=str(error))
            await asyncio.sleep(backoff.next_delay())

    async def _send(self, client: AckedClient) -> None:
        """Publish the pending reports in order, each dropped from the queue on its PUBACK
        (a refusal too: the broker would refuse it again)."""
        while self._pending:
            report = self._pending[0]
            reason = await client.publish_acked(self.report_topic, json.dumps(report))
            self._pending.pop(0)
            if reason.is_failure:
                self.refused += 1
                log.warning("sim dut report refused", dut=self.dut_id, reason=str(reason))
            else:
                self.reports.append(report)

    # --- the run, as the events tell it ------------------------------------------------------

    def _take(self, event: RunState) -> None:
        """Follow one event: a hold starts a window, any other state ends it (a report)."""
        if self._last_seq is not None and event.seq is not None:
            run_id, seq = self._last_seq
            if event.run_id == run_id and event.seq <= seq:
                return  # a repeat, e.g. the outbox sending a row again
        if event.seq is not None:
            self._last_seq = (event.run_id, event.seq)
        self.events += 1
        window = self.window
        if event.state == "holding" and window is not None and (
                (window.run_id, window.step) == (event.run_id, event.step)):
            return  # the same hold, told twice
        if window is not None:
            window.add(self.sources())
            self.window = None
            if event.t_ns // 1000 > window.start_ns // 1000:
                self._pending.append(self._report(window, event.t_ns))
            else:  # the intake refuses a window that does not end after it starts
                log.info("sim dut: a hold of no length, not reported", dut=self.dut_id)
        if event.state == "holding":
            self.window = HoldWindow(event.run_id, event.step, event.point, event.t_ns)
            self.window.add(self.sources())

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_PERIOD_S)
            if self.window is not None:
                self.window.add(self.sources())
                await self._notify()

    def _report(self, window: HoldWindow, end_ns: int) -> dict[str, Any]:
        """What the DUT says of one window: the truth with its configured errors."""
        s = self.settings
        truth = window.mean_kg_h(end_ns)
        if truth >= NOTHING_KG_H:
            detected = bool(self.rng.random() >= s.miss_probability)
            rate = truth * (1 + s.bias)
        else:
            detected = bool(self.rng.random() < s.false_positive_probability)
            rate = s.false_positive_kg_h
        report: dict[str, Any] = {
            "dut_id": self.dut_id, "window_start": iso_utc(window.start_ns),
            "window_end": iso_utc(end_ns), "rate": 0.0, "unit": "kg/h", "lat": None,
            "lon": None, "u_rate": None, "detected": detected}
        if detected:
            lat, lon = self._misplaced(window.where())
            report |= {"rate": max(0.0, rate + float(self.rng.normal(0.0, s.noise_kg_h))),
                       "lat": lat, "lon": lon, "u_rate": s.noise_kg_h}
        return report

    def _misplaced(self, where: tuple[float, float] | None) -> tuple[float | None, float | None]:
        """`where` moved by the localization error in a random direction."""
        if where is None:
            return None, None
        heading = float(self.rng.uniform(0.0, 2 * math.pi))
        distance = self.settings.localization_error_m
        d_lat, d_lon = offset_to_degrees(where[0], distance * math.cos(heading),
                                         distance * math.sin(heading))
        return where[0] + d_lat, where[1] + d_lon
