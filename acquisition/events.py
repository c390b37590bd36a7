"""The one way components report what happened: an awaitable event sink.

The daemon's `event` is the sink: it writes the event row (durably) and, for run
events, queues the MQTT message. Components get it injected, so none of them needs
to know the store or the broker.
"""

from __future__ import annotations

from typing import Any, Protocol


class EventSink(Protocol):
    async def __call__(self, kind: str, detail: dict[str, Any],
                       run_id: str | None = None) -> object: ...


class HealthSource(Protocol):
    """Every worker's counters as one JSON-ready dict (the daemon's `health`)."""

    async def __call__(self) -> dict[str, Any]: ...
