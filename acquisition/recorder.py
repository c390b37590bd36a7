"""Writes samples from the bus to the store in batched transactions (about one per second)."""

from __future__ import annotations

import asyncio

import structlog

from acquisition.bus import Subscription
from acquisition.store import Store
from drivers.sample import Sample

log = structlog.get_logger(__name__)


class Recorder:
    """Collects sample batches and commits them every `interval_s`; `flush` drains the rest."""

    def __init__(self, store: Store, subscription: Subscription, interval_s: float) -> None:
        self.store = store
        self.subscription = subscription
        self.interval_s = interval_s
        self.run_id: str | None = None
        self.committed = 0
        self._buffer: list[Sample] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self.subscription.queue
        while True:
            deadline = loop.time() + self.interval_s
            while (remaining := deadline - loop.time()) > 0:
                try:
                    self._buffer.extend(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            await self._commit()

    async def flush(self) -> None:
        """Commit everything buffered or queued; call after the run() task has ended."""
        self._buffer.extend(self.subscription.take_all())
        await self._commit()

    async def _commit(self) -> None:
        # Swap the buffer out before awaiting: the commit runs on the store's thread
        # even if this task is cancelled meanwhile, so nothing is written twice.
        batch, self._buffer = self._buffer, []
        if batch:
            await self.store.add_samples(batch, self.run_id)
            self.committed += len(batch)
