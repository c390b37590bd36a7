"""The calibration conditions of each step: wind, air temperature and pressure over its hold
from the weather device's samples, and the check against the station's limits.

A 24-hour run holds tens of millions of samples, so none is loaded: each figure is an SQL
aggregate over one channel's time range, read through the `samples_by_channel_time`
index. Wind direction is circular (359° and 1° average to 0°, not 180°): its mean is the
direction of the mean unit vector, from the sums of sin and cos, in SQL where SQLite has
its math functions and else by streaming the direction samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from acquisition.config.station import StationConfig
from acquisition.config.tables import ConditionLimits, ConditionRange
from acquisition.store.store import Store, StoreError

# Channels the met drivers record, and the factor to the unit the limits use.
SCALARS: dict[str, dict[str, tuple[str, float]]] = {
    "wind_speed": {"m/s": ("wind_speed_m_s", 1.0)},
    "air_temperature": {"degC": ("temperature_c", 1.0)},
    "air_pressure": {"hPa": ("pressure_kpa", 0.1), "kPa": ("pressure_kpa", 1.0),
                     "Pa": ("pressure_kpa", 0.001)},
}
DIRECTION = ("wind_direction", "deg")

# A step's hold (its truth window); a step that never became stable: its whole span.
HOLD = "COALESCE(st.t_stable_ns, st.t_start_ns) AND st.t_end_ns"


@dataclass(frozen=True)
class Stat:
    """One scalar condition over one step's hold."""

    n: int
    min: float
    mean: float
    max: float


@dataclass(frozen=True)
class Direction:
    """The wind direction over one step's hold, from the sums of its unit vectors."""

    n: int
    sum_sin: float
    sum_cos: float

    @property
    def mean_deg(self) -> float:
        return math.degrees(math.atan2(self.sum_sin, self.sum_cos)) % 360

    @property
    def spread_deg(self) -> float:
        """Circular standard deviation, sqrt(-2 ln R), R = mean resultant length."""
        r = min(math.hypot(self.sum_sin, self.sum_cos) / self.n, 1.0)
        return math.degrees(math.sqrt(-2 * math.log(r))) if r > 0 else 180.0


@dataclass(frozen=True)
class StepConditions:
    step: int  # the step's idx
    stats: dict[str, Stat]  # by limit name: temperature_c, pressure_kpa, wind_speed_m_s
    direction: Direction | None
    outside: tuple[str, ...]  # the limits the step did not keep (see `check`)


def conditions_device(config: StationConfig) -> str | None:
    """The [met.*] device of the conditions: the configured one, else the only one."""
    chosen = config.certificate.conditions.device
    if chosen is None and len(config.met) == 1:
        return next(iter(config.met))
    return chosen


def _outside_range(stat: Stat | None, limit: ConditionRange) -> bool:
    if limit.min is None and limit.max is None:
        return False
    if stat is None:
        return True
    return ((limit.min is not None and stat.min < limit.min)
            or (limit.max is not None and stat.max > limit.max))


def in_sector(direction_deg: float, sector: tuple[float, float]) -> bool:
    """Whether a direction lies on the arc clockwise from sector[0] to sector[1]."""
    start, end = sector
    width = (end - start) % 360 or 360.0
    return (direction_deg - start) % 360 <= width


def check(stats: Mapping[str, Stat], direction: Direction | None,
          limits: ConditionLimits) -> tuple[str, ...]:
    """The limits a step broke: every sample of a ranged condition must be inside its range
    (min and max over the hold), the mean wind direction inside the sector. A limited
    condition without samples counts as broken: nothing shows it was kept."""
    broken = [name for name in ("temperature_c", "pressure_kpa", "wind_speed_m_s")
              if _outside_range(stats.get(name), getattr(limits, name))]
    sector = limits.wind_sector_deg
    if sector is not None and (direction is None or not in_sector(direction.mean_deg, sector)):
        broken.append("wind_sector_deg")
    return tuple(broken)


def covering_arc(directions: Sequence[float]) -> tuple[float, float] | None:
    """The shortest clockwise arc holding every direction (the complement of the widest
    gap between them): the range of directions, even across north."""
    if not directions:
        return None
    ordered = sorted(d % 360 for d in directions)
    gaps = [((ordered[(i + 1) % len(ordered)] - angle) % 360, i)
            for i, angle in enumerate(ordered)]
    _, widest = max(gaps) if len(ordered) > 1 else (360.0, 0)
    return ordered[(widest + 1) % len(ordered)], ordered[widest]


async def _channels(store: Store, device: str) -> dict[tuple[str, str], int]:
    rows = await store.query("SELECT id, channel, unit FROM channels WHERE device = ?", device)
    return {(channel, unit): channel_id for channel_id, channel, unit in rows}


async def _scalar_stats(store: Store, run_id: str, channels: dict[tuple[str, str], int]
                        ) -> dict[int, dict[str, Stat]]:
    """{step idx: {limit name: Stat}}: one grouped query over every scalar channel."""
    wanted = {channel_id: SCALARS[channel][unit] for (channel, unit), channel_id
              in channels.items() if unit in SCALARS.get(channel, {})}
    if not wanted:
        return {}
    marks = ", ".join("?" for _ in wanted)
    rows = await store.query(
        "SELECT st.idx, s.channel_id, COUNT(s.value), MIN(s.value), AVG(s.value),"
        " MAX(s.value) FROM steps st JOIN samples s INDEXED BY samples_by_channel_time"
        f" ON s.channel_id IN ({marks}) AND s.t_ns BETWEEN {HOLD}"
        " WHERE st.run_id = ? AND s.quality = 'ok' AND s.value IS NOT NULL"
        " GROUP BY st.idx, s.channel_id", *wanted, run_id)
    stats: dict[int, dict[str, Stat]] = {}
    for idx, channel_id, n, low, mean, high in rows:
        name, factor = wanted[channel_id]
        stats.setdefault(idx, {})[name] = Stat(n, low * factor, mean * factor, high * factor)
    return stats


async def has_math_functions(store: Store) -> bool:
    """Whether this SQLite was built with its math functions (sin, cos, radians)."""
    try:
        await store.query("SELECT sin(radians(1))")
    except StoreError:
        return False
    return True


async def direction_sums(store: Store, run_id: str, channel_id: int, in_sql: bool
                         ) -> dict[int, Direction]:
    """{step idx: Direction}: summed in SQL, or (`in_sql` False) streamed step by step."""
    where = "s.channel_id = ? AND s.quality = 'ok' AND s.value IS NOT NULL"
    if in_sql:
        rows = await store.query(
            "SELECT st.idx, COUNT(s.value), SUM(sin(radians(s.value))),"
            " SUM(cos(radians(s.value))) FROM steps st JOIN samples s INDEXED BY"
            f" samples_by_channel_time ON {where} AND s.t_ns BETWEEN {HOLD}"
            " WHERE st.run_id = ? GROUP BY st.idx", channel_id, run_id)
        return {idx: Direction(n, sum_sin, sum_cos) for idx, n, sum_sin, sum_cos in rows}
    holds = await store.query("SELECT idx, COALESCE(t_stable_ns, t_start_ns), t_end_ns"
                              " FROM steps WHERE run_id = ? AND t_end_ns IS NOT NULL", run_id)
    sums = {}
    for idx, start_ns, end_ns in holds:
        n, sum_sin, sum_cos = 0, 0.0, 0.0
        async for _, batch in store.batches(
                f"SELECT s.value FROM samples s WHERE {where} AND s.t_ns BETWEEN ? AND ?",
                channel_id, start_ns, end_ns):
            for (value,) in batch:
                n += 1
                sum_sin += math.sin(math.radians(value))
                sum_cos += math.cos(math.radians(value))
        if n:
            sums[idx] = Direction(n, sum_sin, sum_cos)
    return sums


async def step_conditions(store: Store, config: StationConfig, run_id: str,
                          steps: Sequence[Mapping[str, Any]]) -> list[StepConditions]:
    """Every step's conditions and the limits it broke; with no weather device, none
    measured (each step then breaks every limit set)."""
    device = conditions_device(config)
    limits = config.certificate.conditions
    channels = await _channels(store, device) if device is not None else {}
    stats = await _scalar_stats(store, run_id, channels)
    directions: dict[int, Direction] = {}
    if DIRECTION in channels:
        directions = await direction_sums(store, run_id, channels[DIRECTION],
                                          await has_math_functions(store))
    result = []
    for step in steps:
        idx = step["idx"]
        own, direction = stats.get(idx, {}), directions.get(idx)
        result.append(StepConditions(idx, own, direction, check(own, direction, limits)))
    return result
