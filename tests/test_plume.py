"""The Gaussian plume of the simulators: a value worked out by hand, the symmetries and
limits the model must keep, and the WGS-84 geometry of source, sensor and wind."""

from __future__ import annotations

import math

import numpy as np
import pytest

from acquisition.geodesy import offset_to_degrees
from simulators.plume import (
    BRIGGS_OPEN_COUNTRY,
    MIN_WIND_M_S,
    Source,
    Stability,
    briggs_sigmas,
    downwind_crosswind,
    excess_ppm,
    g_m3_to_ppm,
    observed_ppm,
    plume_g_m3,
)

LAT0, LON0 = 34.75, 113.63  # the source
AIR = {"gas": "CH4", "temperature_c": 20.0, "pressure_hpa": 1013.25}


def test_class_d_at_100_m_on_the_axis_as_worked_out_by_hand() -> None:
    # Class D, x = 100 m, y = 0, z = H = 0, Q = 1 g/s, u = 2 m/s.
    # sy = 0.08 * 100 * (1 + 0.0001 * 100)^-1/2 = 8 / sqrt(1.01) = 8 / 1.0049876 = 7.960298 m
    # sz = 0.06 * 100 * (1 + 0.0015 * 100)^-1/2 = 6 / sqrt(1.15) = 6 / 1.0723805 = 5.595029 m
    # C = Q / (2 pi u sy sz) * exp(0) * [exp(0) + exp(0)] = 1 / (pi * 2 * 7.960298 * 5.595029)
    #   = 1 / (pi * 89.07637) = 1 / 279.8409 = 3.573457e-3 g/m3
    # In ppm at 20 degC, 1013.25 hPa: molar volume R T / p = 8.314462618 * 293.15 / 101325
    #   = 0.02405512 m3/mol, so 3.573457e-3 / 16.043 * 0.02405512 * 1e6 = 5.358095 ppm.
    sy, sz = briggs_sigmas(np.array(100.0), "D")
    assert float(sy) == pytest.approx(7.960298, rel=1e-6)
    assert float(sz) == pytest.approx(5.595029, rel=1e-6)
    c = plume_g_m3(1.0, 2.0, np.array(100.0), np.array(0.0), np.array(0.0), 0.0, "D")
    assert float(c) == pytest.approx(3.573457e-3, rel=1e-6)
    assert float(g_m3_to_ppm(c, **AIR)) == pytest.approx(5.358095, rel=1e-6)


@pytest.mark.parametrize("x", [0.0, -0.5, -30.0])
def test_a_receptor_upwind_sees_the_background_only(x: float) -> None:
    c = plume_g_m3(5.0, 3.0, np.array(x), np.array(0.0), np.array(1.0), 0.0, "F")
    assert float(c) == 0.0
    reading = observed_ppm(g_m3_to_ppm(c, **AIR), 2.0, 0.0, np.random.default_rng(1))
    assert float(reading) == 2.0


@pytest.mark.parametrize("stability", list(BRIGGS_OPEN_COUNTRY))
def test_the_plume_is_even_across_the_wind(stability: Stability) -> None:
    x = np.array([5.0, 20.0, 80.0, 400.0])
    for y in (0.5, 3.0, 12.0):
        left = plume_g_m3(1.0, 2.5, x, np.full(4, y), np.full(4, 1.5), 1.0, stability)
        right = plume_g_m3(1.0, 2.5, x, np.full(4, -y), np.full(4, 1.5), 1.0, stability)
        np.testing.assert_array_equal(left, right)
        assert left.max() > 0


@pytest.mark.parametrize("stability", list(BRIGGS_OPEN_COUNTRY))
def test_ground_level_on_the_axis_falls_steadily_beyond_its_peak(stability: Stability) -> None:
    # An outlet 3 m up: at ground level the plume arrives, peaks, then only thins out.
    x = np.geomspace(0.5, 5000.0, 400)
    c = plume_g_m3(1.0, 3.0, x, np.zeros_like(x), np.zeros_like(x), 3.0, stability)
    peak = int(np.argmax(c))
    assert 0 < peak < len(x) - 1
    assert (np.diff(c[peak:]) < 0).all()
    assert (np.diff(c[: peak + 1]) >= 0).all()  # 0 where the plume has not come down yet


def test_calm_air_is_taken_as_the_lightest_wind() -> None:
    args = (np.array(30.0), np.array(0.0), np.array(1.0), 0.0, "D")
    np.testing.assert_array_equal(plume_g_m3(1.0, 0.0, *args),
                                  plume_g_m3(1.0, MIN_WIND_M_S, *args))


def north_of_source(metres: float) -> tuple[float, float]:
    """The position `metres` north of the source."""
    return LAT0 + offset_to_degrees(LAT0, metres, 0.0)[0], LON0


@pytest.mark.parametrize(("wind_from", "downwind", "across"), [
    (180.0, 40.0, 0.0),  # from the south: the sensor due north is downwind
    (0.0, -40.0, 0.0),  # from the north: upwind
    (90.0, 0.0, 40.0),  # from the east: beside the plume's axis
    (270.0, 0.0, -40.0),
])
def test_a_sensor_due_north_in_the_wind_frame(wind_from: float, downwind: float,
                                              across: float) -> None:
    x, y = downwind_crosswind(np.array(0.0), np.array(40.0), wind_from)
    assert float(x) == pytest.approx(downwind, abs=1e-9)
    assert abs(float(y)) == pytest.approx(abs(across), abs=1e-9)


def test_the_sensor_due_north_sees_the_plume_only_with_a_south_wind() -> None:
    lat, lon = north_of_source(40.0)
    source = [Source("P1", LAT0, LON0, 0.5)]  # 0.5 kg/h
    seen = {wind_from: float(excess_ppm(source, np.array(lat), np.array(lon), np.array(1.5),
                                        wind_m_s=3.0, wind_from_deg=wind_from, stability="D",
                                        **AIR))
            for wind_from in (180.0, 0.0, 90.0, 200.0)}
    on_axis = plume_g_m3(0.5 / 3.6, 3.0, np.array(40.0), np.array(0.0), np.array(1.5), 0.0, "D")
    assert seen[180.0] == pytest.approx(float(g_m3_to_ppm(on_axis, **AIR)), rel=1e-9)
    assert seen[0.0] == 0.0
    assert seen[90.0] < 1e-6 * seen[180.0]  # 40 m straight across, at x ~ 0
    assert 0 < seen[200.0] < seen[180.0]  # 20 degrees off the axis


def test_sensors_are_computed_together_and_sources_add_up() -> None:
    lats, lons = zip(*(north_of_source(d) for d in (10.0, 25.0, 60.0)), strict=True)
    lat, lon, height = np.array(lats), np.array(lons), np.array([1.0, 2.0, 0.5])
    one = Source("P1", LAT0, LON0, 0.2)
    wind = {"wind_m_s": 2.0, "wind_from_deg": 175.0, "stability": "C"}
    together = excess_ppm([one], lat, lon, height, **wind, **AIR)  # type: ignore[arg-type]
    apart = [float(excess_ppm([one], lat[i : i + 1], lon[i : i + 1], height[i : i + 1],
                              **wind, **AIR)[0]) for i in range(3)]  # type: ignore[arg-type]
    np.testing.assert_allclose(together, apart, rtol=1e-12)
    twice = excess_ppm([one, Source("P1b", LAT0, LON0, 0.2), Source("off", LAT0, LON0, 0.0)],
                       lat, lon, height, **wind, **AIR)  # type: ignore[arg-type]
    np.testing.assert_allclose(twice, 2 * together, rtol=1e-12)
    assert math.isfinite(float(twice.sum()))


def test_readings_scatter_by_the_noise_around_background_plus_plume() -> None:
    rng = np.random.default_rng(3)
    readings = observed_ppm(np.full(20_000, 0.3), 2.0, 0.01, rng)
    assert float(readings.mean()) == pytest.approx(2.3, abs=3e-4)
    assert float(readings.std()) == pytest.approx(0.01, rel=0.03)
