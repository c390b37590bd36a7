"""What the DUT tools read from the run store: the run, its steps, the wind samples."""

from __future__ import annotations

from typing import Any

from acquisition.store.store import Store


class UnknownRunError(Exception):
    """No run of that id in the store."""


async def require_run(store: Store, run_id: str) -> dict[str, Any]:
    """The run's row, every column; UnknownRunError if there is none."""
    rows = await store.records("SELECT * FROM runs WHERE id = ?", run_id)
    if not rows:
        latest = await store.query("SELECT id FROM runs ORDER BY t_start_ns DESC LIMIT 3")
        raise UnknownRunError(f"no run '{run_id}' in {store.path} (latest: "
                              f"{', '.join(row[0] for row in latest) or 'none'})")
    return rows[0]


async def run_steps(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The run's steps, every column, in order."""
    return await store.records("SELECT * FROM steps WHERE run_id = ? ORDER BY idx", run_id)


async def wind_speeds(store: Store, device: str, start_ns: int, end_ns: int
                      ) -> list[tuple[int, float]]:
    """(t_ns, m/s) of the device's good wind_speed samples from start_ns to end_ns."""
    rows = await store.query(
        "SELECT s.t_ns, s.value FROM samples s JOIN channels c ON c.id = s.channel_id"
        " WHERE c.device = ? AND c.channel = 'wind_speed' AND c.unit = 'm/s'"
        " AND s.quality = 'ok' AND s.value IS NOT NULL AND s.t_ns BETWEEN ? AND ?"
        " ORDER BY s.t_ns", device, start_ns, end_ns)
    return [(int(t_ns), float(value)) for t_ns, value in rows]
