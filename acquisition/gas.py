"""Gas physics: mass rate of the released species <-> an MFC's standard volumetric flow.

m_dot = Q_std * rho_ref * x, with rho_ref = p_ref * M / (Z * R * T_ref) at the MFC's own
reference (standard) conditions, and x the mole fraction of the species in the cylinder.
An MFC calibrated on another gas reads Q_indicated; the actual flow is Q_indicated * GCF.
Z comes from the second virial coefficient, Z = 1 + B(T) p / (R T), which is exact to
well under 1e-4 for CH4 and CO2 near ambient conditions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

R = 8.314462618  # J/(mol K), CODATA 2018 (exact in SI)
T0 = 273.15  # K

# Rate units of a target: mass units are of the released species; volumetric units are
# the species' volume at 0 degC and 101.325 kPa (normal conditions), whatever the MFC's.
MASS_UNITS_KG_H = {"kg/h": 1.0, "g/h": 1e-3, "g/min": 60e-3, "g/s": 3.6, "kg/d": 1 / 24}
VOLUME_UNITS_L_MIN = {"SLPM": 1.0, "sccm": 1e-3, "NLPM": 1.0, "Nm3/h": 1000 / 60}
RATE_UNITS = tuple(MASS_UNITS_KG_H) + tuple(VOLUME_UNITS_L_MIN)
NORMAL_PRESSURE_KPA = 101.325


@dataclass(frozen=True)
class Species:
    name: str
    molar_mass_g_mol: float
    # Second virial coefficient B (cm3/mol) at temperatures (K), interpolated linearly.
    virial_t_k: tuple[float, ...]
    virial_b_cm3_mol: tuple[float, ...]

    def compressibility(self, t_k: float, p_kpa: float) -> float:
        b = float(np.interp(t_k, self.virial_t_k, self.virial_b_cm3_mol)) * 1e-6  # m3/mol
        return 1.0 + b * p_kpa * 1e3 / (R * t_k)

    def density(self, t_c: float, p_kpa: float) -> float:
        """kg/m3 of the pure gas at t_c (degC) and p_kpa."""
        t_k = t_c + T0
        return p_kpa * 1e3 * self.molar_mass_g_mol * 1e-3 / (
            self.compressibility(t_k, p_kpa) * R * t_k)


# Virial coefficients: Dymond & Smith / NIST-type values, smoothed (cm3/mol).
SPECIES = {
    "CH4": Species("CH4", 16.043, (250.0, 273.15, 293.15, 298.15, 323.15),
                   (-65.0, -53.4, -46.5, -43.0, -34.5)),
    "CO2": Species("CO2", 44.010, (250.0, 273.15, 293.15, 298.15, 323.15),
                   (-180.0, -149.7, -128.0, -123.0, -103.0)),
}


def species(name: str) -> Species:
    try:
        return SPECIES[name]
    except KeyError:
        raise ValueError(f"unknown gas '{name}' (known: {', '.join(SPECIES)})") from None


def to_kg_h(value: float, unit: str, gas: str) -> float:
    """A rate in any supported unit as kg/h of the species."""
    if unit in MASS_UNITS_KG_H:
        return value * MASS_UNITS_KG_H[unit]
    if unit in VOLUME_UNITS_L_MIN:
        rho = species(gas).density(0.0, NORMAL_PRESSURE_KPA)
        return value * VOLUME_UNITS_L_MIN[unit] * 1e-3 * 60 * rho
    raise ValueError(f"unknown rate unit '{unit}' (use one of {', '.join(RATE_UNITS)})")


@dataclass(frozen=True)
class FlowConversion:
    """How one MFC's indicated standard flow maps to the species' mass rate."""

    gas: str
    reference_temperature_c: float
    reference_pressure_kpa: float
    purity: float  # mole fraction of the species in the cylinder
    gcf: float = 1.0  # 1.0 when the MFC is set to the actual gas

    @property
    def density_kg_m3(self) -> float:
        return species(self.gas).density(self.reference_temperature_c,
                                         self.reference_pressure_kpa)

    @property
    def kg_h_per_lpm(self) -> float:
        """Mass rate of species (kg/h) per 1 L/min indicated."""
        return 1e-3 * 60 * self.density_kg_m3 * self.purity * self.gcf

    def mass_rate(self, indicated_lpm: float) -> float:
        return indicated_lpm * self.kg_h_per_lpm

    def setpoint_for(self, kg_h: float) -> float:
        return kg_h / self.kg_h_per_lpm
