"""In-process fan-out of samples from drivers to consumers (recorder, publisher, scheduler).

Publishing never blocks and never fails: a consumer that falls behind loses batches,
and the loss is counted per consumer, in the station's health (retained status,
`crf ctl status`) and, for the recorder, in the `daemon.stop` event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from drivers.sample import Sample


class Subscription:
    """One consumer's bounded queue of sample batches."""

    def __init__(self, name: str, max_batches: int) -> None:
        self.name = name
        self.queue: asyncio.Queue[Sequence[Sample]] = asyncio.Queue(max_batches)
        self.dropped_samples = 0

    def offer(self, batch: Sequence[Sample]) -> None:
        try:
            self.queue.put_nowait(batch)
        except asyncio.QueueFull:
            self.dropped_samples += len(batch)

    def take_all(self) -> list[Sample]:
        """Everything queued right now, without waiting."""
        samples: list[Sample] = []
        while not self.queue.empty():
            samples.extend(self.queue.get_nowait())
        return samples


class SampleBus:
    """Delivers each published batch to every subscription."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []

    def subscribe(self, name: str, max_batches: int = 10_000) -> Subscription:
        subscription = Subscription(name, max_batches)
        self._subscriptions.append(subscription)
        return subscription

    def health(self) -> dict[str, int]:
        """Samples each consumer lost because it fell behind (0 is the only good figure)."""
        return {subscription.name: subscription.dropped_samples
                for subscription in self._subscriptions}

    def publish(self, batch: Sequence[Sample]) -> None:
        if batch:
            for subscription in self._subscriptions:
                subscription.offer(batch)
