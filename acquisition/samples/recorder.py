"""Writes samples from the bus to the store in batched transactions (about one per second).

Each sample belongs to the run whose [t_start, t_end] holds its timestamp, not to the
run that happens to be active when its batch is committed: a batch straddles the start
and the end of every run, and a device may publish a sample some time after stamping it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog

from acquisition.samples.bus import Subscription
from acquisition.store.store import Store

log = structlog.get_logger(__name__)

LATE_S = 60.0  # a sample reaches the recorder at most this much (in stamps) behind the newest
# Batches wait in the recorder's queue between commits, and while a commit is slow: at
# the nominal load (about 70 batches/s) this bridges a store stalled for ten minutes.
QUEUE_BATCHES = 50_000


@dataclass
class RunWindow:
    """The time span of one run; `t_end_ns` is None while the run goes on."""

    run_id: str
    t_start_ns: int
    t_end_ns: int | None = None

    def holds(self, t_ns: int) -> bool:
        return self.t_start_ns <= t_ns and (self.t_end_ns is None or t_ns <= self.t_end_ns)


class Recorder:
    """Collects sample batches and commits them every `interval_s`; `flush` drains the rest.

    A run's window is kept after the run ended until a sample stamped more than `late_s`
    after its end has arrived: by then every sample stamped inside it has been committed.
    """

    def __init__(self, store: Store, subscription: Subscription, interval_s: float,
                 late_s: float = LATE_S) -> None:
        self.store = store
        self.subscription = subscription
        self.interval_s = interval_s
        self.late_ns = int(late_s * 1e9)
        self.committed = 0
        self._windows: list[RunWindow] = []

    def run_started(self, run_id: str, t_start_ns: int) -> None:
        """Samples stamped from `t_start_ns` on belong to the run.

        Call it right after taking the stamp, with no await in between, so that no batch
        is tagged while the recorder does not know the run yet. A run never ended (its
        closing failed) ends where this one starts."""
        for window in self._windows:
            if window.t_end_ns is None:
                window.t_end_ns = t_start_ns - 1
        self._windows.append(RunWindow(run_id, t_start_ns))

    def run_ended(self, run_id: str, t_end_ns: int) -> None:
        """Samples stamped after `t_end_ns` are not the run's; those stamped up to it are,
        however late they arrive. Call it right after taking the stamp (no await between)."""
        window = next((w for w in self._windows if w.run_id == run_id), None)
        if window is None:
            log.warning("end of a run the recorder never saw start", run_id=run_id)
            return
        window.t_end_ns = t_end_ns

    async def run(self) -> None:
        # Wakes once per commit, not once per batch: the batches wait in the queue.
        while True:
            await asyncio.sleep(self.interval_s)
            await self._commit()

    async def flush(self) -> None:
        """Commit everything queued; call after the run() task has ended."""
        await self._commit()

    def _run_of(self, t_ns: int) -> str | None:
        return next((w.run_id for w in self._windows if w.holds(t_ns)), None)

    async def _commit(self) -> None:
        # Take the queue and tag it before awaiting: the commit runs on the store's
        # thread even if this task is cancelled meanwhile, so nothing is written twice.
        batch = self.subscription.take_all()
        if not batch:
            return
        tagged = [(sample, self._run_of(sample.t_ns)) for sample in batch]
        newest = max(sample.t_ns for sample in batch)
        self._windows = [w for w in self._windows
                         if w.t_end_ns is None or newest - w.t_end_ns <= self.late_ns]
        try:
            await self.store.add_samples(tagged)
        except asyncio.CancelledError:  # the store's thread commits the batch all the same
            self.committed += len(batch)
            raise
        self.committed += len(batch)

    def health(self) -> dict[str, Any]:
        return {"committed": self.committed}
