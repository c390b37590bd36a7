"""Which step a DUT report is about: pure functions over store rows, no I/O.

A step's hold window [t_stable, t_end] (when the truth was measured) is shifted by the
DUT's reporting delay. A report with a time matches the step whose shifted window holds
that time; a window report matches the step whose shifted window covers at least
`min_overlap` of the report's window. A report that matches several steps is `ambiguous`,
one that matches none `unmatched`: both are kept, and count for no step. A step that never
became stable (no t_stable) or never ended is matched by nothing.

With a wind-run rule, a report counts for its step only if the wind has run further than
`wind_run_m` from the step's start to the report's time (the end of its window): before
that the plume may not have reached the DUT. Otherwise it is flagged `wind_run_short`.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

UNMATCHED = "unmatched"
AMBIGUOUS = "ambiguous"
WIND_RUN_SHORT = "wind_run_short"
NS = 1_000_000_000


@dataclass(frozen=True)
class MatchParams:
    """The parameters of one matching, recorded with what it produced."""

    reporting_delay_s: float = 0.0
    min_overlap: float = 0.5
    wind_run_m: float | None = None
    wind_device: str | None = None
    # Wind speed is interpolated between samples at most this far apart; a longer gap (the
    # anemometer silent) adds no wind run, so that a lost sensor never passes a report.
    wind_max_gap_s: float = 10.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReportMatch:
    """One report and what matching made of it."""

    report: Mapping[str, Any]
    step: int | None  # the step it counts for; None: it counts for none
    candidates: tuple[int, ...]  # every step whose shifted hold window it matched
    flags: tuple[str, ...]
    wind_run_m: float | None = None  # since its step's start, when the rule applies


@dataclass(frozen=True)
class Matching:
    reports: tuple[ReportMatch, ...]  # in the order given
    steps: dict[int, tuple[ReportMatch, ...]]  # every step's idx -> the reports counted
    params: MatchParams

    @property
    def unassigned(self) -> tuple[ReportMatch, ...]:
        """Reports that count for no step (unmatched, ambiguous, wind run short)."""
        return tuple(match for match in self.reports if match.step is None)


class WindRun:
    """The integral of wind speed over time, from a series of (t_ns, m/s) samples: the
    trapezoid rule between samples, over gaps no longer than `max_gap_s`."""

    def __init__(self, series: Sequence[tuple[int, float]], max_gap_s: float) -> None:
        self._samples = sorted(series)
        self._times = [t_ns for t_ns, _ in self._samples]
        self._max_gap_ns = max_gap_s * NS
        self._cumulative = [0.0]
        for (t0, v0), (t1, v1) in zip(self._samples, self._samples[1:], strict=False):
            self._cumulative.append(self._cumulative[-1] + self._area(t0, v0, t1, v1, t1))

    def _area(self, t0: int, v0: float, t1: int, v1: float, until: int) -> float:
        """Metres run from t0 to `until` (t0 <= until <= t1) between two samples."""
        if t1 - t0 > self._max_gap_ns or t1 == t0:
            return 0.0
        v_until = v0 + (v1 - v0) * (until - t0) / (t1 - t0)
        return (v0 + v_until) / 2 * (until - t0) / NS

    def _to(self, t_ns: int) -> float:
        """Metres run from the first sample to `t_ns`."""
        i = bisect.bisect_right(self._times, t_ns) - 1
        if i < 0:
            return 0.0
        if i >= len(self._samples) - 1:
            return self._cumulative[-1]
        (t0, v0), (t1, v1) = self._samples[i], self._samples[i + 1]
        return self._cumulative[i] + self._area(t0, v0, t1, v1, t_ns)

    def between(self, start_ns: int, end_ns: int) -> float:
        """Metres the wind ran from `start_ns` to `end_ns`, as far as samples tell."""
        return max(0.0, self._to(end_ns) - self._to(start_ns))


def _hold_window(step: Mapping[str, Any], delay_ns: int) -> tuple[int, int] | None:
    """The step's hold window shifted by the reporting delay; None if it has none."""
    if not step.get("stable") or step.get("t_stable_ns") is None or step.get("t_end_ns") is None:
        return None
    return step["t_stable_ns"] + delay_ns, step["t_end_ns"] + delay_ns


def _matches(report: Mapping[str, Any], window: tuple[int, int], min_overlap: float) -> bool:
    low, high = window
    start, end = report.get("window_start_ns"), report.get("window_end_ns")
    if start is None or end is None:
        return bool(low <= report["t_ns"] <= high)
    overlap = min(end, high) - max(start, low)
    return overlap > 0 and overlap >= min_overlap * (end - start)


def match_reports(steps: Sequence[Mapping[str, Any]], reports: Sequence[Mapping[str, Any]],
                  params: MatchParams, wind: Sequence[tuple[int, float]] = ()) -> Matching:
    """Match reports (`dut_reports` rows) to steps (`steps` rows). `wind` is the wind
    speed series (t_ns, m/s) the wind-run rule integrates, if the params have one."""
    delay_ns = round(params.reporting_delay_s * NS)
    windows = {step["idx"]: window for step in steps
               if (window := _hold_window(step, delay_ns)) is not None}
    starts = {step["idx"]: step["t_start_ns"] for step in steps}
    wind_run, limit = WindRun(wind, params.wind_max_gap_s), params.wind_run_m
    matched = []
    for report in reports:
        candidates = tuple(idx for idx, window in windows.items()
                           if _matches(report, window, params.min_overlap))
        if len(candidates) != 1:
            matched.append(ReportMatch(report, None, candidates,
                                       (AMBIGUOUS if candidates else UNMATCHED,)))
            continue
        step = candidates[0]
        if limit is None:
            matched.append(ReportMatch(report, step, candidates, ()))
            continue
        end_ns = report.get("window_end_ns")
        run_m = wind_run.between(starts[step], report["t_ns"] if end_ns is None else end_ns)
        short = not run_m > limit
        matched.append(ReportMatch(report, None if short else step, candidates,
                                   (WIND_RUN_SHORT,) if short else (), run_m))
    by_step = {step["idx"]: tuple(match for match in matched if match.step == step["idx"])
               for step in steps}
    return Matching(tuple(matched), by_step, params)
