"""What a gas analyzer near the release sees: a Gaussian plume with ground reflection.

    C(x, y, z) = Q / (2 pi u sy sz) exp(-y^2 / 2 sy^2)
                 [exp(-(z - H)^2 / 2 sz^2) + exp(-(z + H)^2 / 2 sz^2)]

x downwind, y crosswind, z above ground (m), H the outlet's height, Q in g/s, u in m/s,
C in g/m3, turned into a mole fraction (ppm) with the ideal-gas molar volume of the
ambient air. The spreads sy(x), sz(x) are Briggs' (1973) open-country fits, made for
100 m to 10 km: at the tens of metres of a CRF they are an extrapolation, good enough to
rehearse a DUT and an analyzer against, not to judge one. A steady plume has no meaning
in calm air (C grows as 1/u): below MIN_WIND_M_S the wind is taken as that.

Pure functions of numpy arrays, vectorised over the sensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from acquisition.gas import T0, R, species
from acquisition.geodesy import local_offset_m

Stability = Literal["A", "B", "C", "D", "E", "F"]
MIN_WIND_M_S = 0.5
# Pasquill class: (a_y, a_z, b_z, p_z) of sy = a_y x (1 + 0.0001 x)^-1/2 and
# sz = a_z x (1 + b_z x)^p_z, x in metres (Briggs 1973, open country).
BRIGGS_OPEN_COUNTRY: dict[str, tuple[float, float, float, float]] = {
    "A": (0.22, 0.20, 0.0, 0.0),
    "B": (0.16, 0.12, 0.0, 0.0),
    "C": (0.11, 0.08, 0.0002, -0.5),
    "D": (0.08, 0.06, 0.0015, -0.5),
    "E": (0.06, 0.03, 0.0003, -1.0),
    "F": (0.04, 0.016, 0.0003, -1.0),
}


@dataclass(frozen=True)
class Source:
    """A release point as the air sees it: where, and the mass rate leaving it now."""

    point: str
    latitude: float
    longitude: float
    rate_kg_h: float  # of the released species


def briggs_sigmas(x_m: np.ndarray, stability: Stability) -> tuple[np.ndarray, np.ndarray]:
    """Crosswind and vertical spread (m) at `x_m` metres downwind (x > 0)."""
    a_y, a_z, b_z, p_z = BRIGGS_OPEN_COUNTRY[stability]
    x = np.asarray(x_m, dtype=float)
    return a_y * x / np.sqrt(1 + 0.0001 * x), a_z * x * (1 + b_z * x) ** p_z


def plume_g_m3(rate_g_s: float, wind_m_s: float, x_m: np.ndarray, y_m: np.ndarray,
               z_m: np.ndarray, source_height_m: float, stability: Stability) -> np.ndarray:
    """Excess concentration (g/m3) at (x, y, z); 0 where x <= 0 (upwind or beside)."""
    x, y, z = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (x_m, y_m, z_m)))
    downwind = x > 0
    sy, sz = briggs_sigmas(np.where(downwind, x, 1.0), stability)
    u = max(wind_m_s, MIN_WIND_M_S)
    h = source_height_m
    c = (rate_g_s / (2 * np.pi * u * sy * sz) * np.exp(-(y**2) / (2 * sy**2))
         * (np.exp(-((z - h) ** 2) / (2 * sz**2)) + np.exp(-((z + h) ** 2) / (2 * sz**2))))
    return np.where(downwind, c, 0.0)


def g_m3_to_ppm(c_g_m3: np.ndarray, gas: str, temperature_c: float,
                pressure_hpa: float) -> np.ndarray:
    """Mass concentration of `gas` as its mole fraction in the air, ppm (ideal gas)."""
    molar_volume_m3 = R * (temperature_c + T0) / (pressure_hpa * 100)
    return np.asarray(c_g_m3) / species(gas).molar_mass_g_mol * molar_volume_m3 * 1e6


def downwind_crosswind(east_m: np.ndarray, north_m: np.ndarray, wind_from_deg: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Offsets from a source in the wind's frame: x along the way the air goes (it comes
    FROM `wind_from_deg`, meteorological), y across it (the plume is even in y)."""
    theta = np.radians(wind_from_deg)
    east, north = np.asarray(east_m, dtype=float), np.asarray(north_m, dtype=float)
    along = -(east * np.sin(theta) + north * np.cos(theta))
    return along, east * np.cos(theta) - north * np.sin(theta)


def excess_ppm(sources: Sequence[Source], latitude: np.ndarray, longitude: np.ndarray,
               height_m: np.ndarray, *, wind_m_s: float, wind_from_deg: float,
               stability: Stability, gas: str, temperature_c: float, pressure_hpa: float,
               source_height_m: float = 0.0) -> np.ndarray:
    """What every source adds (ppm) at each sensor (WGS-84 position, height above ground)."""
    lat, lon = np.asarray(latitude, dtype=float), np.asarray(longitude, dtype=float)
    total = np.zeros(np.broadcast(lat, lon, np.asarray(height_m)).shape)
    for source in sources:
        if source.rate_kg_h <= 0:
            continue
        east, north = local_offset_m(lat, lon, source.latitude, source.longitude)
        x, y = downwind_crosswind(east, north, wind_from_deg)
        total += plume_g_m3(source.rate_kg_h / 3.6, wind_m_s, x, y, height_m, source_height_m,
                            stability)
    return g_m3_to_ppm(total, gas, temperature_c, pressure_hpa)


def observed_ppm(excess: np.ndarray, background_ppm: float, noise_ppm: float,
                 rng: np.random.Generator) -> np.ndarray:
    """An analyzer's reading: background plus the plume plus white sensor noise (1 sigma)."""
    excess = np.asarray(excess, dtype=float)
    return background_ppm + excess + rng.normal(0.0, noise_ppm, excess.shape)
