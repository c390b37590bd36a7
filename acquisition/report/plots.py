"""The report's figures as SVG text to put inline in the HTML (and so in the PDF): the
release-rate timeline, the parity plot and the localization scatter.

Matplotlib's Figure is used without pyplot (no GUI backend, no global figure state) and
its text is drawn as paths, so that Chinese shows in any viewer and in WeasyPrint
without the font; the CJK font comes first with a Latin fallback. The plots read the
steps, the matched reports and the results: a few rows, never the samples.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import matplotlib
from matplotlib import dates as mdates
from matplotlib.figure import Figure

from acquisition.dut.matching import Matching
from acquisition.geodesy import local_offset_m
from acquisition.report.labels import Labels
from acquisition.times import NS_PER_S

STYLE = {
    "font.family": ["Noto Sans CJK SC", "DejaVu Sans"],
    "font.size": 8,
    "axes.unicode_minus": False,  # the CJK font has no U+2212
    "svg.fonttype": "path",
    "svg.hashsalt": "crf-report",  # the same run gives the same SVG
    "axes.grid": True,
    "grid.alpha": 0.3,
}
WIDE = (7.0, 2.8)  # inches: the width of an A4 text column
SQUARE = (3.6, 3.4)


def _svg(figure: Figure) -> str:
    """The figure as an inline <svg> element (no XML prolog, no date)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _time(t_ns: int) -> datetime:
    return datetime.fromtimestamp(t_ns / NS_PER_S, UTC)


def timeline(steps: Sequence[Mapping[str, Any]], matching: Matching | None,
             labels: Labels) -> str | None:
    """Truth per step as a step line over UTC time, the target dashed, DUT reports as
    markers (filled: counted for a step; hollow: counted for none)."""
    ended = [step for step in steps if step["t_end_ns"] is not None]
    if not ended:
        return None
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=WIDE)
        axes = figure.add_subplot()
        for key, value, style in (("truth_line", "truth_mean", {"color": "C0", "lw": 1.5}),
                                  ("target_line", "target_kg_h", {"color": "0.5", "lw": 0.8,
                                                                  "ls": "--"})):
            times, rates = [], []
            for step in ended:
                rate = step[value] if value == "truth_mean" else _target_kg_h(step)
                times += [_time(step["t_start_ns"]), _time(step["t_end_ns"])]
                rates += [rate, rate]
            axes.plot(times, [float("nan") if r is None else r for r in rates],
                      label=labels(key), **style)
        if matching is not None:
            for counted, key, marker in ((True, "report_counted", {"color": "C3"}),
                                         (False, "report_unassigned",
                                          {"mfc": "none", "mec": "C1"})):
                reports = [match.report for match in matching.reports
                           if (match.step is not None) == counted]
                if reports:
                    axes.plot([_time(r["t_ns"]) for r in reports],
                              [r["rate_kg_h"] for r in reports], "o", ms=4,
                              label=labels(key), ls="none", **marker)
        axes.xaxis.set_major_locator(mdates.AutoDateLocator(tz=UTC))
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
        axes.set_xlabel(labels("time_utc"))
        axes.set_ylabel(labels("rate_kg_h"))
        axes.legend(loc="best", fontsize=7)
        return _svg(figure)


def _target_kg_h(step: Mapping[str, Any]) -> float | None:
    """The step's target in kg/h, as the scheduler converted it (mfcs_json)."""
    try:
        return float(json.loads(step["mfcs_json"])["target_kg_h"])
    except (TypeError, KeyError, ValueError):
        return None


def parity(results: Mapping[str, Any], labels: Labels) -> str | None:
    """DUT against truth over every valid repeat, truth error bars U (k=2), the 1:1 line
    and the OLS fit of the results."""
    pairs = [(repeat["truth_kg_h"], repeat["dut_kg_h"], repeat["u_truth_kg_h"])
             for point in results["points"] for repeat in point["repeats"]
             if repeat["truth_kg_h"] is not None and repeat["dut_kg_h"] is not None]
    if not pairs:
        return None
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=SQUARE)
        axes = figure.add_subplot()
        truth = [pair[0] for pair in pairs]
        dut = [pair[1] for pair in pairs]
        errors = [2 * pair[2] if pair[2] is not None else 0.0 for pair in pairs]
        axes.errorbar(truth, dut, xerr=errors, fmt="o", ms=4, color="C0", capsize=2,
                      label=labels("dut"))
        top = max(*truth, *dut) * 1.1
        axes.plot([0, top], [0, top], color="0.5", lw=0.8, ls="--", label="1:1")
        fit = results["parity"]
        if fit["slope"] is not None:
            axes.plot([0, top], [fit["intercept"], fit["intercept"] + fit["slope"] * top],
                      color="C3", lw=1, label=labels("ols_fit"))
        axes.set_xlim(0, top)
        axes.set_ylim(0, top)
        axes.set_aspect("equal")
        axes.set_xlabel(labels("truth_kg_h"))
        axes.set_ylabel(labels("dut_kg_h"))
        axes.legend(loc="upper left", fontsize=7)
        return _svg(figure)


def localization(results: Mapping[str, Any], steps: Sequence[Mapping[str, Any]],
                 positions: Mapping[int, Mapping[str, Any]], labels: Labels) -> str | None:
    """Each repeat's DUT position in metres east and north of the release-point position
    its step used, one colour per calibration point, with the point's mean."""
    used = {step["idx"]: positions.get(step["position_id"]) for step in steps}
    series = []
    for point in results["points"]:
        offsets = [local_offset_m(repeat["lat"], repeat["lon"], p0["latitude"],
                                  p0["longitude"])
                   for repeat in point["repeats"]
                   if repeat["lat"] is not None and (p0 := used.get(repeat["step"]))]
        if offsets:
            series.append((f"{point['point']} {point['nominal']:g} {point['unit']}", offsets))
    if not series:
        return None
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=SQUARE)
        axes = figure.add_subplot()
        axes.plot([0], [0], "+", ms=12, mew=1.5, color="k", label=labels("true_position"))
        reach = 1.0
        for colour, (name, offsets) in enumerate(series):
            east = [offset[0] for offset in offsets]
            north = [offset[1] for offset in offsets]
            axes.plot(east, north, "o", ms=4, color=f"C{colour}", label=name)
            axes.plot([sum(east) / len(east)], [sum(north) / len(north)], "D", ms=5,
                      mfc="none", color=f"C{colour}")
            reach = max(reach, *(abs(v) for v in east + north))
        reach *= 1.2
        axes.set_xlim(-reach, reach)
        axes.set_ylim(-reach, reach)
        axes.set_aspect("equal")
        axes.set_xlabel(labels("east_m"))
        axes.set_ylabel(labels("north_m"))
        axes.plot([], [], "D", ms=5, mfc="none", color="0.3", label=labels("mean_position"))
        axes.legend(loc="best", fontsize=7)
        return _svg(figure)
