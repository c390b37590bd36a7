"""CRF truth for one step: the mean released mass rate and its uncertainty budget.

Truth comes from the MFC's readbacks over the hold window, never from the setpoint. Each
component of the budget (JJF 1059.1 / GUM, as in the specification's Appendix C) is a
standard uncertainty in kg/h and relative to the mean; they combine by root-sum-square
and expand with k = 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from acquisition.config.tables import GasConfig, MfcConfig
from acquisition.gas import FlowConversion

COVERAGE_K = 2.0


@dataclass(frozen=True)
class BudgetItem:
    name: str
    u_kg_h: float  # standard uncertainty
    u_rel_pct: float | None  # relative to the mean, None for a blank step
    evaluation: str  # "A" (statistics of the readings) or "B" (other knowledge)
    basis: str  # where the number comes from


@dataclass(frozen=True)
class Truth:
    mean_kg_h: float
    std_kg_h: float
    n: int
    mean_indicated: float
    indicated_unit: str
    corrected: bool
    u_kg_h: float
    expanded_kg_h: float
    k: float
    budget: list[BudgetItem] = field(default_factory=list)

    @property
    def expanded_rel_pct(self) -> float | None:
        return 100 * self.expanded_kg_h / self.mean_kg_h if self.mean_kg_h > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def corrected_flow(indicated: float, pairs: Sequence[tuple[float, float]]) -> float:
    """Reference flow for an indicated one, from certificate pairs (linear between them,
    and along the end segments beyond them)."""
    xs = [pair[0] for pair in pairs]
    ys = [pair[1] for pair in pairs]
    if indicated <= xs[0]:
        i = 0
    elif indicated >= xs[-1]:
        i = len(xs) - 2
    else:
        return float(np.interp(indicated, xs, ys))
    slope = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])
    return ys[i] + slope * (indicated - xs[i])


def compute_truth(
    readings: Sequence[float], mfc: MfcConfig, conversion: FlowConversion, gas: GasConfig,
    indicated_unit: str,
) -> Truth:
    """Truth and budget from the indicated flows read over a hold window."""
    if len(readings) < 2:
        raise ValueError(f"{len(readings)} readings: at least 2 are needed for a truth")
    indicated = np.asarray(readings, dtype=float)
    flows = (np.array([corrected_flow(q, mfc.calibration) for q in indicated])
             if mfc.calibration else indicated)
    rates = flows * conversion.kg_h_per_lpm
    mean = float(rates.mean())
    std = float(rates.std(ddof=1))
    n = len(rates)
    q_mean = float(indicated.mean())

    def item(name: str, u: float, evaluation: str, basis: str) -> BudgetItem:
        return BudgetItem(name, u, 100 * u / mean if mean > 0 else None, evaluation, basis)

    budget = [item("readback mean", std / math.sqrt(n), "A",
                   f"s/sqrt(n), s = {std:.4g} kg/h, n = {n}")]
    if mfc.certificate_u_pct is not None:
        budget.append(item("MFC calibration certificate",
                           mean * mfc.certificate_u_pct / 100 / mfc.certificate_k, "B",
                           f"U = {mfc.certificate_u_pct} % (k = {mfc.certificate_k}), "
                           f"certificate {mfc.certificate_id or 'not named'}"))
    if not mfc.calibration:
        spec = (mfc.accuracy_pct_reading / 100 * q_mean
                + mfc.accuracy_pct_fs / 100 * mfc.full_scale)
        budget.append(item("MFC accuracy spec (uncorrected)",
                           spec / math.sqrt(3) * conversion.kg_h_per_lpm, "B",
                           f"±({mfc.accuracy_pct_reading} % of reading + "
                           f"{mfc.accuracy_pct_fs} % FS), rectangular"))
    if gas.purity_u > 0:
        budget.append(item("gas purity", mean * gas.purity_u / gas.purity, "B",
                           f"x = {gas.purity} ± {gas.purity_u} (standard)"))
    if conversion.gcf != 1.0:
        budget.append(item("gas conversion factor", mean * mfc.gcf_u_pct / 100, "B",
                           f"GCF = {conversion.gcf}, u = {mfc.gcf_u_pct} %"))
    if gas.reference_u_pct > 0:
        budget.append(item("reference conditions / compressibility",
                           mean * gas.reference_u_pct / 100, "B",
                           f"T_ref = {conversion.reference_temperature_c} degC, "
                           f"p_ref = {conversion.reference_pressure_kpa} kPa, "
                           f"rho = {conversion.density_kg_m3:.5f} kg/m3"))
    u = math.sqrt(sum(component.u_kg_h ** 2 for component in budget))
    return Truth(mean, std, n, q_mean, indicated_unit, bool(mfc.calibration), u,
                 COVERAGE_K * u, COVERAGE_K, budget)
