"""A run's calibration results for one DUT: a pure function of stored rows, no I/O.

`compute_results` takes the run's `steps` rows (with `u_standard`, `budget_json` and
`position_id`), one DUT's `Matching` of its reports to those steps, and the
`point_positions` rows by id, and returns a dict that other tools read (the contract
below). Every float in it is finite or None, so `json.dumps(..., allow_nan=False)` works.

```
{"run_id": str, "software": str, "formulas": {name: text},
 "points": [{"point": str, "nominal": float, "unit": str, "n": int, "n_valid": int,
             "truth_kg_h": float | None, "dut_kg_h": float | None,
             "rate_error_pct": float | None, "rate_error_U_pct": float | None,
             "rate_repeatability_pct": float | None,
             "loc_error_m": float | None, "loc_error_mean_m": float | None,
             "loc_error_U_m": float | None, "loc_repeatability_m": float | None,
             "flags": [str],
             "repeats": [{"step": int, "truth_kg_h": float | None,
                          "u_truth_kg_h": float | None, "dut_kg_h": float | None,
                          "n_reports": int, "lat": float | None, "lon": float | None,
                          "loc_error_m": float | None}]}],
 "blanks": [{"step": int, "point": str, "n_reports": int, "dut_kg_h": float | None}],
 "parity": {"slope": float | None, "intercept": float | None, "r2": float | None,
            "slope_origin": float | None, "n": int}}
```

A point's figures are None when it has no valid repeat (rate figures), no position of the
DUT or of the release point (localization figures), or too few of them (repeatabilities);
the parity figures are None with fewer than 2 pairs, or when the data make them undefined
(all truths equal: no slope; all DUT rates equal: no R^2). `step` is the step's `idx`.
The keys of `formulas` are the names of the figures they define.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from acquisition.dut.matching import Matching, ReportMatch
from acquisition.geodesy import local_offset_m

COVERAGE_K = 2.0

# Flags of a point (those with ":<step>" name the step's idx).
TOO_FEW_REPEATS = "too_few_repeats"
MISSED_DETECTION = "missed_detection"
UNSTABLE = "unstable"
NOT_DETECTED = "not_detected"
NO_POSITION = "no_position"
NO_REFERENCE_POSITION = "no_reference_position"
NO_TRUTH_U = "no_truth_u"
U_TRUTH_WHOLE = "u_truth_whole"

FORMULAS: dict[str, str] = {
    "point": "a calibration point = the steps of the run with the same release point, "
             "nominal rate (target_value) and unit (target_unit); steps with target 0 are "
             "blanks, not points",
    "n": "n = repeats (steps) run at the point",
    "n_valid": "n_valid = repeats with a stable truth (stable = 1, truth_mean not null) and a "
               "DUT rate (at least one matched report); every figure of the point uses only "
               "these",
    "repeat": "per repeat i: Q_s,i = truth_mean (kg/h), u(Q_s,i) = u_standard; Q_m,i = mean "
              "rate_kg_h of the DUT reports matched to the step (null: missed detection); "
              "p_i = mean lat/lon of those reports that have a position; p_0,i = the release "
              "point's position the step used (steps.position_id)",
    "truth_kg_h": "mean Q_s = sum_i Q_s,i / n_valid",
    "dut_kg_h": "mean Q_m = sum_i Q_m,i / n_valid",
    "rate_error_pct": "delta = (mean Q_m - mean Q_s) / mean Q_s x 100 %",
    "rate_repeatability_pct": "r_i = Q_m,i / Q_s,i; s_r = sqrt(sum_i (r_i - mean r)^2 / "
                              "(n_valid - 1)) / mean r x 100 % (Bessel); null when "
                              "n_valid < 2",
    "distance_m": "WGS-84 local tangent plane at p_0: dE = R_N cos(lat0) dlon, "
                  "dN = R_M dlat (radians), R_M = a (1 - e^2) / (1 - e^2 sin^2 lat0)^1.5, "
                  "R_N = a / sqrt(1 - e^2 sin^2 lat0), a = 6378137 m, "
                  "f = 1/298.257223563, e^2 = f (2 - f); d = sqrt(dE^2 + dN^2)",
    "loc_offset_m": "o_i = (dE, dN) of p_i from p_0,i (distance_m), over the valid repeats "
                    "where both exist (n_loc of them)",
    "loc_error_m": "d(mean_i p_i, p_0) = |sum_i o_i / n_loc| (the mean taken in E/N; with one "
                   "p_0 for every repeat this is the distance of the mean position)",
    "loc_error_mean_m": "sum_i |o_i| / n_loc, the mean of the per-repeat distances",
    "repeat_loc_error_m": "a repeat's loc_error_m = |o_i| = d(p_i, p_0,i)",
    "loc_repeatability_m": "s_p = sqrt(sum_i |o_i - mean o|^2 / (n_loc - 1)) m (= the spread "
                           "of the p_i when every repeat used the same p_0); null when "
                           "n_loc < 2",
    "u_truth_rel": "relative standard uncertainty of the point's truth, one correlated budget: "
                   "per repeat u_A,i = sqrt(sum of the type-A items' u_kg_h^2 in budget_json) "
                   "/ Q_s,i, u_B,i = sqrt((u_standard / Q_s,i)^2 - u_A,i^2); "
                   "u_rel = sqrt((mean u_A,i)^2 / n_valid + (mean u_B,i)^2)",
    "u_truth_rel_whole": "when a valid repeat's budget_json cannot be read (flag "
                         "u_truth_whole): u_rel = mean_i (u_standard / Q_s,i), the whole "
                         "relative u, type-A part not divided by sqrt(n_valid)",
    "rate_error_U_pct": "U(delta) = k sqrt(u_rel^2 + (s_r / 100 / sqrt(n_valid))^2) x 100 %, "
                        "k = 2 (u_rel from u_truth_rel or u_truth_rel_whole; the s_r term "
                        "left out when s_r is null; sensitivity coefficients taken as 1, "
                        "i.e. mean Q_m / mean Q_s ~ 1); null when a valid repeat has no "
                        "u_standard (flag no_truth_u)",
    "loc_error_U_m": "U(loc) = k sqrt(u_0^2 + (s_p / sqrt(n_loc))^2) m, k = 2, u_0 = mean "
                     "h_spread_m (1 sigma, horizontal) of the p_0,i used; the s_p term left "
                     "out when s_p is null",
    "blank": "a blank = a step with target 0: n_reports = DUT reports matched to it; a report "
             "with detected true and rate_kg_h > 0 is a false positive; dut_kg_h = mean "
             "rate_kg_h of the false positives (null: none)",
    "parity": "over all valid repeats of all points, x = Q_s,i, y = Q_m,i, n pairs: OLS "
              "slope = S_xy / S_xx, intercept = mean y - slope mean x, R^2 = 1 - SS_res / "
              "SS_tot; through the origin slope_origin = sum(x y) / sum(x^2); null with "
              "n < 2",
    "flags": "too_few_repeats: n_valid < 2; missed_detection:<step>: a stable repeat with no "
             "matched report; unstable:<step>: a repeat without a stable truth; "
             "not_detected:<step>: a matched report says detected = false; no_position: "
             "valid repeats, none with a DUT position; no_reference_position:<step>: a valid "
             "repeat "
             "whose step has no known release-point position; no_truth_u:<step>: a valid "
             "repeat without u_standard; u_truth_whole: u_truth_rel_whole was used",
}


def _num(value: float | None) -> float | None:
    """A finite float, or None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return float(np.mean(values)) if values else None


def _is_blank(step: Mapping[str, Any]) -> bool:
    return not step.get("target_value")


def _truth_is_stable(step: Mapping[str, Any]) -> bool:
    return bool(step.get("stable")) and step.get("truth_mean") is not None


def _budget_split(step: Mapping[str, Any]) -> tuple[float, float] | None:
    """(u_A, u_B) relative to the truth from the step's budget_json; None if unreadable."""
    truth, u = step.get("truth_mean"), step.get("u_standard")
    try:
        budget = json.loads(step["budget_json"])["budget"]
        u_a2 = sum(float(item["u_kg_h"]) ** 2 for item in budget if item["evaluation"] == "A")
    except (KeyError, TypeError, ValueError):
        return None
    if not truth or u is None or not math.isfinite(u_a2):
        return None
    u_rel, u_a = u / truth, math.sqrt(u_a2) / truth
    return u_a, math.sqrt(max(u_rel ** 2 - u_a ** 2, 0.0))


def _report_position(counted: Sequence[ReportMatch]) -> tuple[float, float] | None:
    """p_i: the mean lat/lon of the counted reports that have one."""
    placed = [(m.report["lat"], m.report["lon"]) for m in counted
              if m.report.get("lat") is not None and m.report.get("lon") is not None]
    if not placed:
        return None
    return float(np.mean([p[0] for p in placed])), float(np.mean([p[1] for p in placed]))


def _repeat(step: Mapping[str, Any], counted: Sequence[ReportMatch],
            positions: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    p_i = _report_position(counted)
    p_0 = positions.get(step["position_id"]) if step.get("position_id") is not None else None
    offset = (local_offset_m(p_i[0], p_i[1], p_0["latitude"], p_0["longitude"])
              if p_i is not None and p_0 is not None else None)
    return {
        "step": int(step["idx"]),
        "truth_kg_h": _num(step.get("truth_mean")),
        "u_truth_kg_h": _num(step.get("u_standard")),
        "dut_kg_h": _num(_mean(m.report["rate_kg_h"] for m in counted)),
        "n_reports": len(counted),
        "lat": _num(p_i[0]) if p_i else None,
        "lon": _num(p_i[1]) if p_i else None,
        "loc_error_m": _num(math.hypot(*offset)) if offset else None,
        # not in the output: what the point's figures need
        "_offset": offset,
        "_h_spread": p_0.get("h_spread_m") if p_0 is not None else None,
        "_has_p0": p_0 is not None,
    }


def _point(steps: Sequence[Mapping[str, Any]], matching: Matching,
           positions: Mapping[int, Mapping[str, Any]]) -> tuple[dict[str, Any], list]:
    """One point's results and its valid (Q_s, Q_m) pairs."""
    flags: list[str] = []
    repeats, valid = [], []
    for step in steps:
        counted = matching.steps.get(step["idx"], ())
        repeat = _repeat(step, counted, positions)
        repeats.append(repeat)
        idx = repeat["step"]
        if not _truth_is_stable(step):
            flags.append(f"{UNSTABLE}:{idx}")
        elif not counted:
            flags.append(f"{MISSED_DETECTION}:{idx}")
        if any(not m.report.get("detected") for m in counted):
            flags.append(f"{NOT_DETECTED}:{idx}")
        if _truth_is_stable(step) and repeat["dut_kg_h"] is not None:
            valid.append((step, repeat))
    n_valid = len(valid)
    if n_valid < 2:
        flags.insert(0, TOO_FEW_REPEATS)

    q_s = np.array([step["truth_mean"] for step, _ in valid], dtype=float)
    q_m = np.array([repeat["dut_kg_h"] for _, repeat in valid], dtype=float)
    truth = float(q_s.mean()) if n_valid else None
    dut = float(q_m.mean()) if n_valid else None
    delta = 100 * (dut - truth) / truth if n_valid and truth else None
    s_r = None
    if n_valid >= 2:
        ratios = q_m / q_s
        if ratios.mean() != 0:
            s_r = 100 * float(ratios.std(ddof=1) / ratios.mean())

    u_rel = None
    if n_valid:
        missing_u = [repeat["step"] for step, repeat in valid if step.get("u_standard") is None]
        flags.extend(f"{NO_TRUTH_U}:{idx}" for idx in missing_u)
        splits = [_budget_split(step) for step, _ in valid]
        if missing_u:
            u_rel = None
        elif all(split is not None for split in splits):
            u_a = float(np.mean([split[0] for split in splits if split is not None]))
            u_b = float(np.mean([split[1] for split in splits if split is not None]))
            u_rel = math.sqrt(u_a ** 2 / n_valid + u_b ** 2)
        else:
            flags.append(U_TRUTH_WHOLE)
            u_rel = float(np.mean([step["u_standard"] / step["truth_mean"]
                                   for step, _ in valid]))
    rate_u = None
    if u_rel is not None:
        dut_term = (s_r / 100 / math.sqrt(n_valid)) if s_r is not None else 0.0
        rate_u = 100 * COVERAGE_K * math.sqrt(u_rel ** 2 + dut_term ** 2)

    flags.extend(f"{NO_REFERENCE_POSITION}:{repeat['step']}" for _, repeat in valid
                 if not repeat["_has_p0"])
    located = [repeat for _, repeat in valid if repeat["_offset"] is not None]
    if n_valid and not any(repeat["lat"] is not None for _, repeat in valid):
        flags.append(NO_POSITION)
    loc_error = loc_mean = loc_rep = loc_u = None
    if located:
        offsets = np.array([repeat["_offset"] for repeat in located], dtype=float)
        mean_offset = offsets.mean(axis=0)
        loc_error = float(np.hypot(*mean_offset))
        loc_mean = float(np.hypot(offsets[:, 0], offsets[:, 1]).mean())
        if len(located) >= 2:
            residuals = ((offsets - mean_offset) ** 2).sum(axis=1)
            loc_rep = math.sqrt(float(residuals.sum()) / (len(located) - 1))
        spreads = [repeat["_h_spread"] for repeat in located]
        if all(spread is not None for spread in spreads):
            u_0 = float(np.mean(spreads))
            rep_term = loc_rep / math.sqrt(len(located)) if loc_rep is not None else 0.0
            loc_u = COVERAGE_K * math.sqrt(u_0 ** 2 + rep_term ** 2)

    first = steps[0]
    point = {
        "point": str(first.get("release_point") or "-"),
        "nominal": _num(first.get("target_value")),
        "unit": str(first.get("target_unit") or ""),
        "n": len(steps),
        "n_valid": n_valid,
        "truth_kg_h": _num(truth),
        "dut_kg_h": _num(dut),
        "rate_error_pct": _num(delta),
        "rate_error_U_pct": _num(rate_u),
        "rate_repeatability_pct": _num(s_r),
        "loc_error_m": _num(loc_error),
        "loc_error_mean_m": _num(loc_mean),
        "loc_error_U_m": _num(loc_u),
        "loc_repeatability_m": _num(loc_rep),
        "flags": flags,
        "repeats": [{key: value for key, value in repeat.items() if not key.startswith("_")}
                    for repeat in repeats],
    }
    return point, list(zip(q_s.tolist(), q_m.tolist(), strict=True))


def _blank(step: Mapping[str, Any], matching: Matching) -> dict[str, Any]:
    counted = matching.steps.get(step["idx"], ())
    false_positives = [m.report["rate_kg_h"] for m in counted
                       if m.report.get("detected") and m.report["rate_kg_h"] > 0]
    return {"step": int(step["idx"]), "point": str(step.get("release_point") or "-"),
            "n_reports": len(counted), "dut_kg_h": _num(_mean(false_positives))}


def parity(pairs: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """OLS of Q_m on Q_s with an intercept, and through the origin."""
    n = len(pairs)
    result: dict[str, Any] = {"slope": None, "intercept": None, "r2": None,
                              "slope_origin": None, "n": n}
    if n < 2:
        return result
    x = np.array([pair[0] for pair in pairs], dtype=float)
    y = np.array([pair[1] for pair in pairs], dtype=float)
    s_xx = float(((x - x.mean()) ** 2).sum())
    s_xy = float(((x - x.mean()) * (y - y.mean())).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    sum_x2 = float((x * x).sum())
    if sum_x2 > 0:
        result["slope_origin"] = _num(float((x * y).sum()) / sum_x2)
    if s_xx > 0:
        slope = s_xy / s_xx
        intercept = float(y.mean()) - slope * float(x.mean())
        result["slope"], result["intercept"] = _num(slope), _num(intercept)
        if ss_tot > 0:
            ss_res = float(((y - (intercept + slope * x)) ** 2).sum())
            result["r2"] = _num(1 - ss_res / ss_tot)
    return result


def compute_results(run_id: str, software: str, steps: list[dict], matching: Matching,
                    positions: dict[int, dict]) -> dict:
    """The calibration results of one DUT in one run (see the module's docstring).

    `steps`: the run's `steps` rows; `matching`: `match_reports` of the DUT's reports to
    those steps; `positions`: `point_positions` rows by id (`latitude`, `longitude`,
    `h_spread_m`). Points and blanks come in the order of their first step."""
    groups: dict[tuple[Any, Any, Any], list[dict]] = {}
    blanks = []
    for step in sorted(steps, key=lambda row: row["idx"]):
        if _is_blank(step):
            blanks.append(_blank(step, matching))
        else:
            key = (step.get("release_point"), step.get("target_value"), step.get("target_unit"))
            groups.setdefault(key, []).append(step)
    points, pairs = [], []
    for group in groups.values():
        point, point_pairs = _point(group, matching, positions)
        points.append(point)
        pairs.extend(point_pairs)
    return {"run_id": run_id, "software": software, "formulas": dict(FORMULAS),
            "points": points, "blanks": blanks, "parity": parity(pairs)}
