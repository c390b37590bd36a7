"""Release-point positions: surveyed coordinates, or the mean of good GNSS fixes.

A survey keeps the fixes of sufficient quality from the last `window_s` seconds; once
it has `min_fixes` of them the point's position is their mean, with the spread of the
fixes around it in metres (local east/north/up, which is exact enough over the few
metres a fixed antenna wanders).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from acquisition.config.tables import ReleasePointConfig, SurveyConfig
from acquisition.geodesy import local_offset_m
from drivers.gnss import Fix, at_least


@dataclass(frozen=True)
class PointPosition:
    """Where a release point is, how well that is known, and from what."""

    point: str
    latitude: float
    longitude: float
    altitude_m: float | None
    horizontal_spread_m: float  # 1-sigma of the fixes (or of the survey record)
    vertical_spread_m: float | None
    n_fixes: int  # 0 for surveyed coordinates
    source: str  # "surveyed" or "gnss:<receiver>"
    min_quality: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Survey:
    """Sliding window of good fixes from one receiver for one release point."""

    def __init__(self, point: str, config: SurveyConfig) -> None:
        self.point = point
        self.config = config
        self._fixes: deque[tuple[int, float, float, float | None]] = deque()
        self.rejected = 0

    def add(self, fix: Fix) -> None:
        if fix.lat is None or fix.lon is None or not at_least(fix.quality,
                                                              self.config.min_quality):
            self.rejected += 1
            return
        self._fixes.append((fix.t_ns, fix.lat, fix.lon, fix.alt))
        horizon = fix.t_ns - int(self.config.window_s * 1e9)
        while self._fixes and self._fixes[0][0] < horizon:
            self._fixes.popleft()

    @property
    def n_fixes(self) -> int:
        return len(self._fixes)

    def position(self) -> PointPosition | None:
        """Mean and spread of the window, or None until it holds `min_fixes` fixes."""
        if len(self._fixes) < self.config.min_fixes:
            return None
        data = np.array([(lat, lon) for _, lat, lon, _ in self._fixes])
        lat0, lon0 = float(data[:, 0].mean()), float(data[:, 1].mean())
        east, north = local_offset_m(data[:, 0], data[:, 1], lat0, lon0)
        ddof = 1 if len(data) > 1 else 0
        spread = math.sqrt(float(np.var(east, ddof=ddof) + np.var(north, ddof=ddof)))
        altitudes = np.array([alt for *_, alt in self._fixes if alt is not None])
        alt = float(altitudes.mean()) if altitudes.size else None
        v_spread = float(altitudes.std(ddof=1)) if altitudes.size > 1 else None
        return PointPosition(self.point, lat0, lon0, alt, spread, v_spread, len(data),
                             f"gnss:{self.config.receiver}", self.config.min_quality)


class ReleasePoints:
    """Every configured release point and its current best position."""

    def __init__(self, points: dict[str, ReleasePointConfig]) -> None:
        self.points = points
        self.surveys = {name: Survey(name, point.survey)
                        for name, point in points.items() if point.survey}

    def on_fix(self, receiver: str, fix: Fix) -> None:
        """Fix listener: feed every survey that uses this receiver."""
        for survey in self.surveys.values():
            if survey.config.receiver == receiver:
                survey.add(fix)

    def health(self) -> dict[str, dict[str, int]]:
        """Per GNSS-surveyed point: fixes in the window now, fixes refused (no position or
        below the survey's quality)."""
        return {name: {"fixes": survey.n_fixes, "rejected": survey.rejected}
                for name, survey in self.surveys.items()}

    def position(self, name: str) -> PointPosition | None:
        point = self.points[name]
        if name in self.surveys:
            return self.surveys[name].position()
        assert point.latitude is not None and point.longitude is not None
        return PointPosition(name, point.latitude, point.longitude, point.altitude_m,
                             point.horizontal_uncertainty_m, None, 0, "surveyed", None)
