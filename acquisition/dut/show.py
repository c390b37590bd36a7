"""`crf dut show`: a run's steps beside its DUTs' reports, matched with each DUT's
parameters as configured now, so that a corrected reporting delay re-matches the reports
without importing them again. Nothing is written to the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean
from typing import Any, TextIO

from acquisition.config.station import StationConfig
from acquisition.dut.matching import (
    AMBIGUOUS,
    WIND_RUN_SHORT,
    Matching,
    MatchParams,
    ReportMatch,
    match_reports,
)
from acquisition.dut.records import require_run, run_steps, wind_speeds
from acquisition.store.store import Store
from acquisition.times import utc_seconds


@dataclass(frozen=True)
class DutResult:
    """One DUT's reports in one run, matched."""

    dut_id: str
    configured: bool  # whether the station file has a [dut.<id>] table
    matching: Matching
    wind_samples: int  # wind_speed samples the wind-run rule integrated


def params_for(config: StationConfig, dut_id: str) -> MatchParams:
    """The DUT's matching parameters from its [dut.<id>] table, or the defaults."""
    dut = config.dut.get(dut_id)
    if dut is None:
        return MatchParams()
    return MatchParams(reporting_delay_s=dut.reporting_delay_s, min_overlap=dut.min_overlap,
                       wind_run_m=dut.wind_run_m, wind_device=dut.wind_device)


async def load(store: Store, config: StationConfig, run_id: str, dut: str | None
               ) -> tuple[dict[str, Any], list[dict[str, Any]], list[DutResult]]:
    """The run, its steps, and each DUT's matched reports (only `dut`'s if given)."""
    run = await require_run(store, run_id)
    steps = await run_steps(store, run_id)
    reports = [report for report in await store.dut_reports(run_id)
               if dut is None or report["dut_id"] == dut]
    results = []
    for dut_id in sorted({report["dut_id"] for report in reports}):
        own = [report for report in reports if report["dut_id"] == dut_id]
        params = params_for(config, dut_id)
        wind: list[tuple[int, float]] = []
        if params.wind_run_m is not None and params.wind_device is not None and steps:
            last_ns = max(report["window_end_ns"] or report["t_ns"] for report in own)
            wind = await wind_speeds(store, params.wind_device,
                                     min(step["t_start_ns"] for step in steps), last_ns)
        results.append(DutResult(dut_id, dut_id in config.dut,
                                 match_reports(steps, own, params, wind), len(wind)))
    return run, steps, results


def _number(value: float | None, width: int) -> str:
    return f"{value:>{width}.5g}" if value is not None else f"{'-':>{width}}"


def _step_flags(step: dict[str, Any], counted: tuple[ReportMatch, ...]) -> str:
    flags = step["qc_flags"].split(",") if step["qc_flags"] else []
    if not step["stable"] or step["t_stable_ns"] is None:
        flags.insert(0, "unstable")  # no hold window: nothing can match it
    elif not counted:
        flags.append("no_reports")
    misses = sum(1 for match in counted if not match.report["detected"])
    if misses:
        flags.append(f"not_detected:{misses}")
    return ", ".join(flags)


def _why(match: ReportMatch) -> str:
    flag = match.flags[0]
    if flag == AMBIGUOUS:
        return f"{flag}: steps {', '.join(str(idx + 1) for idx in match.candidates)}"
    if flag == WIND_RUN_SHORT:
        return f"{flag}: step {match.candidates[0] + 1}, {match.wind_run_m:.0f} m by then"
    return flag


def _when(report: dict[str, Any]) -> str:
    if report["window_start_ns"] is None:
        return utc_seconds(report["t_ns"])
    return f"{utc_seconds(report['window_start_ns'])}..{utc_seconds(report['window_end_ns'])}"


def render(run: dict[str, Any], steps: list[dict[str, Any]], results: list[DutResult],
           out: TextIO) -> None:
    """The table of each DUT: step, point, target, truth and U, the reports counted (how
    many, mean kg/h) and flags; then the reports counting for no step; then the params."""
    if not results:
        print(f"run {run['id']} ({run['status']}): no DUT reports", file=out)
    for result in results:
        matching = result.matching
        print(f"run {run['id']} ({run['status']}), DUT {result.dut_id}: "
              f"{len(matching.reports)} report(s)", file=out)
        print(f"{'step':>4}  {'point':<8} {'target':>14}  {'truth kg/h':>10}  {'U (k=2)':>8}"
              f"  {'n':>3}  {'DUT kg/h':>10}  flags", file=out)
        for step in steps:
            counted = matching.steps.get(step["idx"], ())
            mean = fmean(match.report["rate_kg_h"] for match in counted) if counted else None
            target = f"{step['target_value']:g} {step['target_unit']}"
            print(f"{step['idx'] + 1:>4}  {step['release_point'] or '-':<8} {target:>14}  "
                  f"{_number(step['truth_mean'], 10)}  {_number(step['u_expanded'], 8)}  "
                  f"{len(counted):>3}  {_number(mean, 10)}  {_step_flags(step, counted)}",
                  file=out)
        if matching.unassigned:
            print("reports counted for no step:", file=out)
        for match in matching.unassigned:
            report = match.report
            print(f"  #{report['id']}  {_when(report)}  {report['rate']:g} {report['unit']}"
                  f" = {report['rate_kg_h']:.5g} kg/h  {_why(match)}", file=out)
        params = ", ".join(f"{key}={value}" for key, value in matching.params.to_dict().items())
        source = f"[dut.{result.dut_id}]" if result.configured else "defaults: no [dut] table"
        wind = (f"; {result.wind_samples} wind_speed sample(s)"
                if matching.params.wind_run_m is not None else "")
        print(f"matching ({source}): {params}{wind}\n", file=out)
