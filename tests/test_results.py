"""Calibration results (acquisition/results/calibration.py) on a dataset worked out by hand:
a point of 3 repeats with DUT positions, a point with one valid repeat, a missed detection,
an unstable step, blanks with and without a false positive; the contract's keys exactly."""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

import pytest

from acquisition.dut.matching import MatchParams, match_reports
from acquisition.geodesy import distance_m, local_offset_m
from acquisition.results.calibration import compute_results
from acquisition.run.truth import BudgetItem, Truth

S = 1_000_000_000
T0 = 1_777_629_600 * S

# p_0 of P1 (position 1) and of P2 (position 2).
LAT0, LON0 = 30.0, 114.0
# WGS-84 radii at lat0 = 30 deg: sin^2 lat0 = 1/4.
A, F = 6_378_137.0, 1 / 298.257223563
E2 = F * (2 - F)
W2 = 1 - E2 * 0.25
R_M = A * (1 - E2) / W2 ** 1.5  # meridian
R_N = A / math.sqrt(W2)  # prime vertical
COS0 = math.cos(math.radians(30.0))
POSITIONS = {
    1: {"id": 1, "point": "P1", "latitude": LAT0, "longitude": LON0, "h_spread_m": 0.5},
    2: {"id": 2, "point": "P2", "latitude": 30.001, "longitude": 114.002, "h_spread_m": 0.3},
}


def at_offset(east_m: float, north_m: float) -> tuple[float, float]:
    """lat/lon that far east and north of p_0: dlon = dE / (R_N cos lat0), dlat = dN / R_M."""
    return (LAT0 + math.degrees(north_m / R_M), LON0 + math.degrees(east_m / (R_N * COS0)))


def budget_json(truth: float, u_a_rel: float, u_b_rel: float) -> str:
    """A stored budget (Truth.to_dict()) with one type-A and one type-B item."""
    u_a, u_b = u_a_rel * truth, u_b_rel * truth
    items = [BudgetItem("readback mean", u_a, 100 * u_a_rel, "A", "s/sqrt(n)"),
             BudgetItem("MFC calibration certificate", u_b, 100 * u_b_rel, "B", "cert")]
    u = math.hypot(u_a, u_b)
    return json.dumps(Truth(truth, 0.01, 60, 1.0, "SLPM", True, u, 2 * u, 2.0,
                            items).to_dict())


def step(idx: int, point: str, target: float, truth: float | None, *, stable: bool = True,
         u: float | None = None, budget: str | None = None,
         position_id: int | None = 1) -> dict[str, Any]:
    """A steps row; step idx holds from 100 idx + 10 s to 100 idx + 90 s after T0."""
    return {"run_id": "r1", "idx": idx, "release_point": point, "target_value": target,
            "target_unit": "kg/h", "t_start_ns": T0 + 100 * idx * S,
            "t_stable_ns": T0 + (100 * idx + 10) * S if stable else None,
            "t_end_ns": T0 + (100 * idx + 90) * S, "stable": int(stable),
            "truth_mean": truth, "u_standard": u,
            "u_expanded": None if u is None else 2 * u, "budget_json": budget,
            "qc_flags": None, "position_id": position_id}


def report(rid: int, idx: int, rate: float, lat: float | None = None,
           lon: float | None = None, detected: int = 1) -> dict[str, Any]:
    """A dut_reports row, timed in the middle of step idx's hold."""
    return {"id": rid, "run_id": "r1", "dut_id": "dut1", "source": "import",
            "received_ns": T0, "t_ns": T0 + (100 * idx + 50) * S, "window_start_ns": None,
            "window_end_ns": None, "rate": rate, "unit": "kg/h", "rate_kg_h": rate,
            "u_rate": None, "lat": lat, "lon": lon, "detected": detected, "raw": "{}",
            "import_key": None}


# Point P1 at 1 kg/h, steps 0-2: relative u_A 0.3 %, u_B 0.4 % (u = 0.5 %) each.
TRUTHS_1 = [1.00, 1.02, 0.98]
DUT_1 = [1.10, 1.05, 1.12]
OFFSETS_1 = [(3.0, 4.0), (0.0, 2.0), (0.0, -3.0)]  # (east, north) m of each p_i from p_0
STEPS = [step(i, "P1", 1.0, q, u=0.005 * q, budget=budget_json(q, 0.003, 0.004))
         for i, q in enumerate(TRUTHS_1)]
# Point P2 at 2 kg/h: step 3 valid (no budget_json, no DUT position), step 4 missed,
# step 5 never stable.
STEPS += [step(3, "P2", 2.0, 2.0, u=0.02, position_id=2),
          step(4, "P2", 2.0, 2.1, u=0.021, position_id=2),
          step(5, "P2", 2.0, None, stable=False, position_id=2)]
# Blanks: step 6 with a false positive, step 7 with an explicit "no emission".
STEPS += [step(6, "P1", 0.0, 0.0, u=0.0), step(7, "P2", 0.0, 0.0, u=0.0)]

REPORTS = [report(i + 1, i, rate, *at_offset(*offset))
           for i, (rate, offset) in enumerate(zip(DUT_1, OFFSETS_1, strict=True))]
REPORTS += [report(10, 3, 1.9),
            report(11, 6, 0.05), report(12, 7, 0.0, detected=0),
            report(13, 8, 3.0)]  # after the run: unmatched, counts nowhere


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    matching = match_reports(STEPS, REPORTS, MatchParams())
    return compute_results("r1", "crf-daq 0.0-test", STEPS, matching, POSITIONS)


def close(actual: float | None, expected: float, rel: float = 1e-9) -> bool:
    return actual is not None and math.isclose(actual, expected, rel_tol=rel, abs_tol=1e-12)


def test_contract_keys_and_strict_json(result: dict[str, Any]) -> None:
    assert set(result) == {"run_id", "software", "formulas", "points", "blanks", "parity"}
    assert (result["run_id"], result["software"]) == ("r1", "crf-daq 0.0-test")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in result["formulas"].items())
    for name in ("rate_error_pct", "rate_repeatability_pct", "distance_m", "loc_error_m",
                 "loc_error_mean_m", "loc_repeatability_m", "rate_error_U_pct",
                 "loc_error_U_m", "parity"):
        assert name in result["formulas"]
    for point in result["points"]:
        assert set(point) == {
            "point", "nominal", "unit", "n", "n_valid", "truth_kg_h", "dut_kg_h",
            "rate_error_pct", "rate_error_U_pct", "rate_repeatability_pct", "loc_error_m",
            "loc_error_mean_m", "loc_error_U_m", "loc_repeatability_m", "flags", "repeats"}
        for repeat in point["repeats"]:
            assert set(repeat) == {"step", "truth_kg_h", "u_truth_kg_h", "dut_kg_h",
                                   "n_reports", "lat", "lon", "loc_error_m"}
    for blank in result["blanks"]:
        assert set(blank) == {"step", "point", "n_reports", "dut_kg_h"}
    assert set(result["parity"]) == {"slope", "intercept", "r2", "slope_origin", "n"}
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_points_are_grouped_and_blanks_kept_apart(result: dict[str, Any]) -> None:
    assert [(p["point"], p["nominal"], p["unit"], p["n"], p["n_valid"])
            for p in result["points"]] == [("P1", 1.0, "kg/h", 3, 3), ("P2", 2.0, "kg/h", 3, 1)]
    assert [r["step"] for r in result["points"][0]["repeats"]] == [0, 1, 2]
    assert [r["step"] for r in result["points"][1]["repeats"]] == [3, 4, 5]


def test_rate_error_repeatability_and_uncertainty(result: dict[str, Any]) -> None:
    p1 = result["points"][0]
    # mean Q_s = (1.00 + 1.02 + 0.98) / 3 = 1.00; mean Q_m = (1.10 + 1.05 + 1.12) / 3 = 1.09
    assert close(p1["truth_kg_h"], 1.00)
    assert close(p1["dut_kg_h"], 1.09)
    # delta = (1.09 - 1.00) / 1.00 x 100 = 9 %
    assert close(p1["rate_error_pct"], 9.0)
    # r = 1.10/1.00, 1.05/1.02, 1.12/0.98; s_r = stdev(r) (n - 1) / mean r x 100
    r = [1.10 / 1.00, 1.05 / 1.02, 1.12 / 0.98]
    mean_r = sum(r) / 3
    s_r = math.sqrt(sum((x - mean_r) ** 2 for x in r) / 2) / mean_r * 100
    assert close(s_r, statistics.stdev(r) / statistics.fmean(r) * 100)
    assert close(p1["rate_repeatability_pct"], s_r)
    # u_A = 0.3 %, u_B = 0.4 % on every repeat: u_rel^2 = 0.003^2 / 3 + 0.004^2 = 19e-6;
    # U = 2 sqrt(19e-6 + (s_r / 100 / sqrt 3)^2) x 100
    assert close(p1["rate_error_U_pct"], 200 * math.sqrt(19e-6 + (s_r / 100) ** 2 / 3))
    assert p1["flags"] == []
    assert [(x["truth_kg_h"], x["dut_kg_h"], x["n_reports"]) for x in p1["repeats"]] == [
        (1.00, 1.10, 1), (1.02, 1.05, 1), (0.98, 1.12, 1)]
    assert close(p1["repeats"][1]["u_truth_kg_h"], 0.0051)


def test_localization(result: dict[str, Any]) -> None:
    p1 = result["points"][0]
    # per repeat: |(3, 4)| = 5, |(0, 2)| = 2, |(0, -3)| = 3 m
    assert [x["loc_error_m"] for x in p1["repeats"]] == pytest.approx([5.0, 2.0, 3.0],
                                                                       abs=1e-6)
    # mean offset (1, 1): loc error sqrt 2; mean of distances 10/3
    assert p1["loc_error_m"] == pytest.approx(math.sqrt(2), abs=1e-6)
    assert p1["loc_error_mean_m"] == pytest.approx(10 / 3, abs=1e-6)
    # residuals from (1, 1): (2, 3), (-1, 1), (-1, -4): 13 + 2 + 17 = 32; sqrt(32 / 2) = 4
    assert p1["loc_repeatability_m"] == pytest.approx(4.0, abs=1e-6)
    # U = 2 sqrt(0.5^2 + (4 / sqrt 3)^2)
    assert p1["loc_error_U_m"] == pytest.approx(2 * math.sqrt(0.25 + 16 / 3), abs=1e-6)
    lat, lon = at_offset(3.0, 4.0)
    assert close(p1["repeats"][0]["lat"], lat) and close(p1["repeats"][0]["lon"], lon)


def test_single_repeat_point_missed_detection_and_unstable(result: dict[str, Any]) -> None:
    p2 = result["points"][1]
    # only step 3 is valid: 1.9 against 2.0 kg/h -> -5 %
    assert close(p2["truth_kg_h"], 2.0) and close(p2["dut_kg_h"], 1.9)
    assert close(p2["rate_error_pct"], -5.0)
    assert p2["rate_repeatability_pct"] is None
    # no budget_json: the whole relative u, 0.02 / 2 = 1 %, U = 2 x 1 % (no s_r term)
    assert close(p2["rate_error_U_pct"], 2.0)
    assert p2["flags"] == ["too_few_repeats", "missed_detection:4", "unstable:5",
                           "u_truth_whole", "no_position"]
    assert [p2[key] for key in ("loc_error_m", "loc_error_mean_m", "loc_error_U_m",
                                "loc_repeatability_m")] == [None] * 4
    missed, unstable = p2["repeats"][1], p2["repeats"][2]
    assert (missed["dut_kg_h"], missed["n_reports"], missed["truth_kg_h"]) == (None, 0, 2.1)
    assert (unstable["truth_kg_h"], unstable["dut_kg_h"], unstable["n_reports"]) == (
        None, None, 0)


def test_blanks_and_false_positive(result: dict[str, Any]) -> None:
    assert result["blanks"] == [
        {"step": 6, "point": "P1", "n_reports": 1, "dut_kg_h": 0.05},  # a false positive
        {"step": 7, "point": "P2", "n_reports": 1, "dut_kg_h": None},  # "no emission"
    ]


def test_parity(result: dict[str, Any]) -> None:
    # valid pairs (Q_s, Q_m): (1.00, 1.10), (1.02, 1.05), (0.98, 1.12), (2.00, 1.90)
    x = [1.00, 1.02, 0.98, 2.00]
    y = [1.10, 1.05, 1.12, 1.90]
    mx, my = sum(x) / 4, sum(y) / 4  # 1.25, 1.2925
    s_xx = sum((a - mx) ** 2 for a in x)
    s_xy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    slope = s_xy / s_xx
    intercept = my - slope * mx
    ss_res = sum((b - intercept - slope * a) ** 2 for a, b in zip(x, y, strict=True))
    ss_tot = sum((b - my) ** 2 for b in y)
    origin = sum(a * b for a, b in zip(x, y, strict=True)) / sum(a * a for a in x)
    got = result["parity"]
    assert got["n"] == 4
    assert close(got["slope"], slope) and close(got["intercept"], intercept)
    assert close(got["r2"], 1 - ss_res / ss_tot)
    assert close(got["slope_origin"], origin)


def test_wgs84_distance_against_offsets() -> None:
    lat, lon = at_offset(3.0, -4.0)
    east, north = local_offset_m(lat, lon, LAT0, LON0)
    assert (east, north) == pytest.approx((3.0, -4.0), abs=1e-9)
    assert distance_m(lat, lon, LAT0, LON0) == pytest.approx(5.0, abs=1e-9)


def test_nothing_valid_gives_nulls_and_strict_json() -> None:
    steps = [step(0, "P1", 1.0, 1.0, u=0.005), step(1, "P1", 1.0, None, stable=False)]
    matching = match_reports(steps, [], MatchParams())
    result = compute_results("r2", "sw", steps, matching, POSITIONS)
    point = result["points"][0]
    assert (point["n"], point["n_valid"]) == (2, 0)
    assert point["flags"] == ["too_few_repeats", "missed_detection:0", "unstable:1"]
    assert all(point[key] is None for key in (
        "truth_kg_h", "dut_kg_h", "rate_error_pct", "rate_error_U_pct",
        "rate_repeatability_pct", "loc_error_m", "loc_error_mean_m", "loc_error_U_m",
        "loc_repeatability_m"))
    assert result["parity"] == {"slope": None, "intercept": None, "r2": None,
                                "slope_origin": None, "n": 0}
    json.dumps(result, allow_nan=False)
