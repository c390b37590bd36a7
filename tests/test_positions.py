"""Release-point surveys from GNSS fixes, surveyed points, and the host-clock monitor."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pytest

from acquisition.config.tables import ReleasePointConfig, SurveyConfig
from acquisition.geodesy import distance_m, local_offset_m, offset_to_degrees
from acquisition.site.clock import ClockMonitor
from acquisition.site.positions import ReleasePoints, Survey
from drivers.gnss import Fix, GnssInterpreter
from drivers.nmea import NmeaDecoder
from tests.test_gnss import nmea

LAT0, LON0 = 34.752057, 113.629433


def fix(t_s: float, lat: float, lon: float, quality: int = 4, alt: float = 100.0) -> Fix:
    return Fix(int(t_s * 1e9), None, None, lat, lon, alt, quality, "", 20, 0.6, "GN")


def noisy_fixes(n: int, sigma_m: float, seed: int = 1, t0: float = 0.0) -> list[Fix]:
    rng = np.random.default_rng(seed)
    metre_lat, metre_lon = offset_to_degrees(LAT0, 1.0, 1.0)
    dlat = rng.normal(0, sigma_m, n) * metre_lat
    dlon = rng.normal(0, sigma_m, n) * metre_lon
    return [fix(t0 + i, LAT0 + a, LON0 + b, alt=100 + rng.normal(0, 0.02))
            for i, (a, b) in enumerate(zip(dlat, dlon, strict=True))]


def test_survey_mean_and_spread_from_good_fixes_only() -> None:
    survey = Survey("P1", SurveyConfig(receiver="rx", min_quality="rtk_fixed", window_s=600,
                                       min_fixes=50))
    for f in noisy_fixes(49, 0.02):
        survey.add(f)
    assert survey.position() is None  # not enough fixes yet
    survey.add(fix(49, LAT0 + 0.01, LON0, quality=5))  # RTK float: refused, though far off
    survey.add(fix(50, LAT0, LON0, quality=0))
    assert survey.rejected == 2 and survey.position() is None
    for f in noisy_fixes(200, 0.02, seed=2, t0=51):
        survey.add(f)
    position = survey.position()
    assert position is not None and position.n_fixes == 249
    assert distance_m(position.latitude, position.longitude, LAT0, LON0) < 0.01
    # 2-D spread of N(0, 0.02 m) in east and north: sqrt(2) * 0.02
    assert position.horizontal_spread_m == pytest.approx(0.02 * math.sqrt(2), rel=0.15)
    assert position.vertical_spread_m == pytest.approx(0.02, rel=0.25)
    assert position.source == "gnss:rx" and position.min_quality == "rtk_fixed"


def test_survey_window_slides() -> None:
    survey = Survey("P1", SurveyConfig(receiver="rx", window_s=10, min_fixes=5))
    for i in range(30):
        survey.add(fix(i, LAT0 + (0.001 if i < 20 else 0.0), LON0))
    position = survey.position()
    assert position is not None and position.n_fixes == 11  # t = 19 .. 29
    assert position.latitude == pytest.approx(LAT0 + 0.001 / 11, abs=1e-9)


def test_surveyed_point_and_receiver_routing() -> None:
    points = ReleasePoints({
        "fixed": ReleasePointConfig(latitude=LAT0, longitude=LON0, altitude_m=99.5,
                                    horizontal_uncertainty_m=0.05),
        "roving": ReleasePointConfig(survey=SurveyConfig(receiver="rx2", min_fixes=1)),
    })
    fixed = points.position("fixed")
    assert fixed is not None and fixed.source == "surveyed" and fixed.n_fixes == 0
    assert fixed.horizontal_spread_m == 0.05
    points.on_fix("rx1", fix(0, LAT0, LON0))  # another receiver: ignored
    assert points.position("roving") is None
    points.on_fix("rx2", fix(0, LAT0, LON0))
    assert points.position("roving") is not None


def test_distances_on_the_wgs84_ellipsoid() -> None:
    # One degree of latitude at the equator: the meridian radius there, a (1 - e^2), is
    # 6,335,439.3 m, so 110,574.3 m; one of longitude: a, so 111,319.5 m.
    assert distance_m(1, 0, 0, 0) == pytest.approx(110_574.3, abs=0.1)
    assert distance_m(0, 1, 0, 0) == pytest.approx(111_319.5, abs=0.1)
    east, north = local_offset_m(np.array([LAT0]), np.array([LON0 + 0.0001]), LAT0, LON0)
    assert east[0] == pytest.approx(distance_m(LAT0, LON0 + 0.0001, LAT0, LON0), rel=1e-12)
    assert north[0] == 0
    north_deg, east_deg = offset_to_degrees(LAT0, 3.0, 4.0)
    assert distance_m(LAT0 + north_deg, LON0 + east_deg, LAT0, LON0) == pytest.approx(5.0)


async def test_clock_monitor_warns_past_the_limit_and_when_back() -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    async def record(kind: str, detail: dict[str, Any]) -> None:
        events.append((kind, detail))

    decoder = NmeaDecoder()
    interpreter = GnssInterpreter("rx", Counter())
    monitor = ClockMonitor("rx", interpreter, limit_s=0.5, emit=record)
    host_ns = 1_795_508_100_000_000_000  # 2026-11-24T08:15:00Z

    async def receive(offset_s: float, second: int) -> None:
        line = nmea(f"GNZDA,0815{second:02d}.00,24,11,2026,00,00")
        arrival = host_ns + second * 1_000_000_000 - int(offset_s * 1e9)
        for sentence in decoder.feed(line.encode(), arrival, 0):
            interpreter.interpret(sentence)
        await monitor.check()

    for second in range(5):
        await receive(0.05, second)
    assert events == [] and monitor.offset_s == pytest.approx(0.05)
    await receive(2.0, 5)  # one late reading: the median holds
    assert events == []
    for second in range(6, 9):
        await receive(2.0, second)
    assert events == [("clock.offset_exceeded",
                       {"receiver": "rx", "offset_s": 2.0, "limit_s": 0.5})]
    for second in range(9, 14):
        await receive(0.0, second)
    assert events[-1][0] == "clock.offset_ok"
