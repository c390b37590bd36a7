"""In-process fan-out of samples from drivers to consumers (recorder, publisher, cache).

Publishing never blocks and never fails. A consumer that takes batches at its own pace
(the recorder, the MQTT publisher) has a bounded queue: if it falls behind it loses
batches, and the loss is counted per consumer, in the station's health (retained status,
`crf ctl status`) and, for the recorder, in the `daemon.stop` event. A consumer that only
files each batch away (the cache) is a listener, called as the batch is published: no
queue, no task to wake, nothing to lose.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

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


Listener = Callable[[Sequence[Sample]], None]


class SampleBus:
    """Delivers each published batch to every listener and every subscription."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self._listeners: list[Listener] = []

    def subscribe(self, name: str, max_batches: int = 10_000) -> Subscription:
        subscription = Subscription(name, max_batches)
        self._subscriptions.append(subscription)
        return subscription

    def listen(self, listener: Listener) -> None:
        """Call `listener` with each batch as it is published; it must be quick and must
        not raise (it runs in the publishing driver's task)."""
        self._listeners.append(listener)

    def health(self) -> dict[str, int]:
        """Samples each consumer lost because it fell behind (0 is the only good figure)."""
        return {subscription.name: subscription.dropped_samples
                for subscription in self._subscriptions}

    def publish(self, batch: Sequence[Sample]) -> None:
        if batch:
            for subscription in self._subscriptions:
                subscription.offer(batch)
            for listener in self._listeners:
                listener(batch)
