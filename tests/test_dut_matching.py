"""Matching DUT reports to steps: the shifted hold windows, the overlap of window reports,
gaps, ambiguity, unstable steps and the wind-run rule, on hand-made rows."""

from __future__ import annotations

from typing import Any

import pytest

from acquisition.dut.matching import (
    AMBIGUOUS,
    UNMATCHED,
    WIND_RUN_SHORT,
    MatchParams,
    WindRun,
    match_reports,
)

S = 1_000_000_000
T0 = 1_777_629_600 * S


def step(idx: int, start: int, stable: int | None, end: int | None) -> dict[str, Any]:
    """A step row; times in seconds after T0."""
    return {"idx": idx, "t_start_ns": T0 + start * S,
            "t_stable_ns": None if stable is None else T0 + stable * S,
            "t_end_ns": None if end is None else T0 + end * S, "stable": int(stable is not None),
            "truth_mean": 0.1 * (idx + 1), "target_value": 0.1 * (idx + 1)}


# Holds: step 0 [10, 70], step 1 [85, 145]; step 2 never stable; step 3 never ended.
STEPS = [step(0, 0, 10, 70), step(1, 70, 85, 145), step(2, 145, None, 200),
         step(3, 200, 210, None)]


def at(t: float) -> dict[str, Any]:
    return {"id": 1, "t_ns": T0 + round(t * S), "window_start_ns": None, "window_end_ns": None,
            "rate_kg_h": 0.1}


def window(start: float, end: float) -> dict[str, Any]:
    return {"id": 1, "t_ns": T0 + round((start + end) / 2 * S),
            "window_start_ns": T0 + round(start * S), "window_end_ns": T0 + round(end * S),
            "rate_kg_h": 0.1}


@pytest.mark.parametrize(("report", "params", "step_idx", "flags"), [
    (at(40), MatchParams(), 0, ()),
    (at(10), MatchParams(), 0, ()),  # the hold's ends belong to it
    (at(70), MatchParams(), 0, ()),
    (at(5), MatchParams(), None, (UNMATCHED,)),  # settling, not holding
    (at(78), MatchParams(), None, (UNMATCHED,)),  # the gap between two holds
    (at(100), MatchParams(), 1, ()),
    (at(75), MatchParams(reporting_delay_s=10), 0, ()),  # step 0's hold shifted: [20, 80]
    (at(15), MatchParams(reporting_delay_s=10), None, (UNMATCHED,)),
    (at(150), MatchParams(reporting_delay_s=10), 1, ()),
    (at(170), MatchParams(), None, (UNMATCHED,)),  # step 2 was never stable
    (at(230), MatchParams(), None, (UNMATCHED,)),  # step 3 never ended
    (at(-50), MatchParams(), None, (UNMATCHED,)),  # before the run
    (window(20, 60), MatchParams(), 0, ()),
    (window(50, 90), MatchParams(min_overlap=0.5), 0, ()),  # 20 of its 40 s in step 0
    (window(50, 90), MatchParams(min_overlap=0.51), None, (UNMATCHED,)),
    (window(60, 90), MatchParams(min_overlap=0.5), None, (UNMATCHED,)),  # 1/3 and 1/6
    (window(60, 90), MatchParams(min_overlap=0.3), 0, ()),
    (window(60, 90), MatchParams(min_overlap=0.1), None, (AMBIGUOUS,)),  # in both holds
    (window(70, 85), MatchParams(min_overlap=0.0), None, (UNMATCHED,)),  # touches, no overlap
    (window(50, 90), MatchParams(reporting_delay_s=10, min_overlap=0.75), 0, ()),  # 30 of 40
    (window(150, 190), MatchParams(min_overlap=0.0), None, (UNMATCHED,)),  # unstable step 2
], ids=["inside", "at-stable", "at-end", "settling", "gap", "second", "delay-in",
        "delay-out", "delay-second", "unstable", "not-ended", "before", "window-inside",
        "overlap-at-fraction", "overlap-below", "overlap-low", "overlap-enough", "ambiguous",
        "touching", "delay-window", "window-unstable"])
def test_a_report_matches_the_step_whose_shifted_hold_it_falls_in(
    report: dict[str, Any], params: MatchParams, step_idx: int | None, flags: tuple[str, ...]
) -> None:
    matching = match_reports(STEPS, [report], params)
    (match,) = matching.reports
    assert (match.step, match.flags) == (step_idx, flags)
    assert matching.steps == {idx: ((match,) if idx == step_idx else ()) for idx in range(4)}
    assert matching.unassigned == (() if step_idx is not None else (match,))


def test_an_ambiguous_report_names_its_candidates_and_counts_for_none() -> None:
    matching = match_reports(STEPS, [window(60, 90), at(40)], MatchParams(min_overlap=0.1))
    ambiguous, counted = matching.reports
    assert (ambiguous.step, ambiguous.candidates) == (None, (0, 1))
    assert matching.steps[0] == (counted,) and matching.steps[1] == ()


def test_reports_are_kept_in_order_with_the_parameters_used() -> None:
    reports = [at(100), at(5), at(40), at(41)]
    params = MatchParams(reporting_delay_s=0.0, min_overlap=0.5)
    matching = match_reports(STEPS, reports, params)
    assert [match.report for match in matching.reports] == reports
    assert [match.step for match in matching.reports] == [1, None, 0, 0]
    assert [m.report for m in matching.steps[0]] == [reports[2], reports[3]]
    assert matching.params.to_dict() == {
        "reporting_delay_s": 0.0, "min_overlap": 0.5, "wind_run_m": None,
        "wind_device": None, "wind_max_gap_s": 10.0}


def steady(speed: float, start: float, end: float, every: float = 1.0
           ) -> list[tuple[int, float]]:
    """A wind speed sample every `every` s from `start` to `end` (s after T0)."""
    count = round((end - start) / every)
    return [(T0 + round((start + i * every) * S), speed) for i in range(count + 1)]


WIND = MatchParams(wind_run_m=100.0, wind_device="ws")


@pytest.mark.parametrize(("report", "wind", "step_idx", "run_m"), [
    (at(60), steady(2.0, 0, 200), 0, 120.0),  # 2 m/s for 60 s since step 0 started
    (at(40), steady(2.0, 0, 200), None, 80.0),
    (at(50), steady(2.0, 0, 200), None, 100.0),  # must exceed, not reach
    (at(100), steady(2.0, 0, 200), None, 60.0),  # from step 1's start at 70 s
    (at(125), steady(2.0, 0, 200), 1, 110.0),
    (window(20, 60), steady(2.0, 0, 200), 0, 120.0),  # by the end of its window
    (at(60), [], None, 0.0),  # no anemometer readings: no wind run
    (at(60), steady(2.0, 0, 10) + steady(2.0, 40, 200), None, 60.0),  # a 30 s gap adds none
    (at(60), steady(4.0, 0, 200, every=8.0), 0, 240.0),  # gaps within the limit count
], ids=["enough", "short", "equal", "second-step-short", "second-step", "window",
        "no-wind", "gap", "sparse"])
def test_a_report_counts_only_after_the_wind_run(report: dict[str, Any],
                                                 wind: list[tuple[int, float]],
                                                 step_idx: int | None, run_m: float) -> None:
    matching = match_reports(STEPS, [report], WIND, wind)
    (match,) = matching.reports
    assert match.step == step_idx
    assert match.flags == (() if step_idx is not None else (WIND_RUN_SHORT,))
    assert match.wind_run_m == pytest.approx(run_m)
    assert len(match.candidates) == 1  # it is in a hold: only the wind run decides


def test_without_the_rule_the_wind_is_not_consulted() -> None:
    (match,) = match_reports(STEPS, [at(40)], MatchParams(), []).reports
    assert (match.step, match.wind_run_m) == (0, None)


def test_the_wind_run_is_the_trapezoid_integral_with_interpolated_ends() -> None:
    ramp = [(T0 + t * 2 * S, float(t * 2)) for t in range(6)]  # v = t m/s, 0..10 s
    wind = WindRun(ramp, max_gap_s=10)
    assert wind.between(T0, T0 + 10 * S) == pytest.approx(50.0)
    assert wind.between(T0 + 1 * S, T0 + 5 * S) == pytest.approx(12.0)
    assert wind.between(T0 - 100 * S, T0 + 100 * S) == pytest.approx(50.0)  # outside: none
    assert wind.between(T0 + 5 * S, T0 + 1 * S) == 0.0
    assert WindRun(ramp, max_gap_s=1).between(T0, T0 + 10 * S) == 0.0  # every gap too long
