"""Small horizontal offsets on the WGS-84 ellipsoid: one local tangent plane for every
distance crf-daq computes (release-point spreads, localization errors, the simulated
plume and receivers), so that the same two positions are always the same metres apart.

East and north offsets use the ellipsoid's radii of curvature at the reference latitude:
at CRF distances (< 2 km) this equals the geodesic to well under a millimetre.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np

WGS84_A_M = 6_378_137.0
WGS84_F = 1 / 298.257223563
WGS84_E2 = WGS84_F * (2 - WGS84_F)

Coordinate = TypeVar("Coordinate", float, np.ndarray)


def radii_m(lat0: float) -> tuple[float, float]:
    """The meridian and prime-vertical radii of curvature (metres) at latitude lat0."""
    w2 = 1 - WGS84_E2 * math.sin(math.radians(lat0)) ** 2
    return WGS84_A_M * (1 - WGS84_E2) / w2 ** 1.5, WGS84_A_M / math.sqrt(w2)


def local_offset_m(lat: Coordinate, lon: Coordinate, lat0: float, lon0: float
                   ) -> tuple[Coordinate, Coordinate]:
    """East and north metres of (lat, lon) from (lat0, lon0): floats or numpy arrays."""
    meridian, prime_vertical = radii_m(lat0)
    east = prime_vertical * math.cos(math.radians(lat0)) * np.radians(lon - lon0)
    north = meridian * np.radians(lat - lat0)
    if isinstance(east, np.ndarray):
        return east, north
    return float(east), float(north)


def distance_m(lat: float, lon: float, lat0: float, lon0: float) -> float:
    """Horizontal distance in metres of (lat, lon) from (lat0, lon0)."""
    return math.hypot(*local_offset_m(lat, lon, lat0, lon0))


def offset_to_degrees(lat0: float, north_m: float, east_m: float) -> tuple[float, float]:
    """The latitude and longitude differences of a small north/east offset from lat0."""
    meridian, prime_vertical = radii_m(lat0)
    return (math.degrees(north_m / meridian),
            math.degrees(east_m / (prime_vertical * max(math.cos(math.radians(lat0)), 1e-9))))
