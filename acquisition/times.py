"""Store times (UTC nanoseconds since the epoch) as text, one way for every tool."""

from __future__ import annotations

from datetime import UTC, datetime

NS_PER_S = 1_000_000_000


def iso_utc(t_ns: int) -> str:
    """ISO 8601 UTC with all nine fraction digits: 2026-11-26T01:02:03.123456789Z."""
    seconds, ns = divmod(t_ns, NS_PER_S)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{ns:09d}Z"


def utc_seconds(t_ns: int | None) -> str:
    """ISO 8601 UTC to the second, as tables print it: 2026-11-26T01:02:03Z; '-' for None."""
    return f"{iso_utc(t_ns)[:19]}Z" if t_ns is not None else "-"
