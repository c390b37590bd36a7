"""What `crf demo` reads on the broker, as an operator's screen would: the station's
status (is the daemon online?), its live state (the progress line of `crf ctl watch`) and
the run's public events (the holds, the end of the run, the DUT's reports).

Only public topics: in a blind run the progress line shows no rate or truth until the
run has ended, as every other subscriber sees it.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any, TextIO

import aiomqtt

from acquisition.cli.ctl import bar
from acquisition.mqtt.client import Topics
from acquisition.run.state import FINAL
from acquisition.run.status import progress_line


class StationWatch:
    """Follows one station; `until` awaits a condition on what it has seen."""

    def __init__(self, station: str, out: TextIO) -> None:
        self.topics = Topics(station)
        self.out = out
        self.tty = out.isatty()
        self.online = False
        self.run_id: str | None = None  # the demo's run, once `crf ctl start` said it
        # By run id: events may come before the start command's reply.
        self._holds: defaultdict[str, set[int]] = defaultdict(set)  # steps that held
        self._dut_reports: Counter[str] = Counter()  # DUT reports the station accepted
        self._final: dict[str, str] = {}
        self._progress_shown = False
        self._changed = asyncio.Condition()

    async def subscribe(self, client: aiomqtt.Client) -> None:
        for topic in (self.topics.status, self.topics.state, self.topics.run_event("+")):
            await client.subscribe(topic, qos=1)

    async def follow(self, client: aiomqtt.Client) -> None:
        """Take every message until cancelled."""
        async for message in client.messages:
            self.take(str(message.topic), message.payload)
            async with self._changed:
                self._changed.notify_all()

    async def until(self, condition: Callable[[], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(condition)

    def take(self, topic: str, payload: Any) -> None:
        try:
            message = json.loads(payload)
        except (TypeError, ValueError):
            return
        if not isinstance(message, dict):
            return
        if topic == self.topics.status:
            self.online = message.get("state") == "online"
        elif topic == self.topics.state:
            self._show(message)
        elif isinstance(message.get("run_id"), str):
            self._count(message["run_id"], message)

    def _show(self, view: dict[str, Any]) -> None:
        if self.run_id is None or view.get("run_id") != self.run_id or "state" not in view:
            return  # not the demo's run, or not yet known to be
        line = bar(view) + progress_line(view)
        if self.tty:
            print(f"\r\033[K{line}", end="", file=self.out, flush=True)
        else:
            print(line, file=self.out, flush=True)
        self._progress_shown = True

    def end_progress(self) -> None:
        """End the progress line (on a terminal it is rewritten in place)."""
        if self.tty and self._progress_shown:
            print(file=self.out, flush=True)
        self._progress_shown = False

    def _count(self, run_id: str, event: dict[str, Any]) -> None:
        detail = event.get("detail")
        if not isinstance(detail, dict):
            return
        if event.get("kind") == "dut.report":
            self._dut_reports[run_id] += 1
        elif event.get("kind") == "run.state":
            state = detail.get("state")
            if state == "holding" and isinstance(detail.get("step"), int):
                self._holds[run_id].add(detail["step"])
            elif state in FINAL:
                self._final[run_id] = state

    @property
    def holds(self) -> int:
        """Steps of the demo's run that reached their hold (each gets a DUT report)."""
        return len(self._holds[self.run_id]) if self.run_id else 0

    @property
    def dut_reports(self) -> int:
        return self._dut_reports[self.run_id] if self.run_id else 0

    @property
    def final_state(self) -> str | None:
        """How the demo's run ended; None while it runs."""
        return self._final.get(self.run_id) if self.run_id else None
