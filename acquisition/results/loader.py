"""A run's calibration, read from the store: the rows `compute_results` needs (every step
column, the release-point positions the steps used, one DUT's matched reports) and the
results computed from them. The report and the export both start here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from acquisition.config.station import StationConfig
from acquisition.dut.matching import Matching, match_reports
from acquisition.dut.show import DutResult, load, params_for
from acquisition.results.calibration import compute_results
from acquisition.store.store import Store


class AmbiguousDutError(Exception):
    """Several DUTs reported in the run and none was chosen."""


class UnknownDutError(Exception):
    """The DUT named neither reported in the run nor has a [dut.<id>] table: a misspelt id."""


@dataclass(frozen=True)
class Calibration:
    """One DUT's calibration in one run, with the rows its figures come from."""

    run: dict[str, Any]  # the runs row, every column
    steps: list[dict[str, Any]]  # the steps rows, every column, in order
    positions: dict[int, dict[str, Any]]  # point_positions rows the steps used, by id
    dut_id: str | None  # None: no DUT reported and none was named
    dut: DutResult | None  # None: the DUT sent no report in this run
    results: dict[str, Any]  # compute_results: the results.json contract

    @property
    def matching(self) -> Matching | None:
        return self.dut.matching if self.dut is not None else None


async def point_positions(store: Store, ids: set[int]) -> dict[int, dict[str, Any]]:
    """point_positions rows by id."""
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    rows = await store.records(f"SELECT * FROM point_positions WHERE id IN ({marks})",
                               *sorted(ids))
    return {row["id"]: row for row in rows}


async def load_calibration(store: Store, config: StationConfig, run_id: str,
                           dut_id: str | None = None) -> Calibration:
    """The calibration of `dut_id` in `run_id`, or of the one DUT that reported in it.

    UnknownRunError if there is no such run; AmbiguousDutError if several DUTs reported
    and `dut_id` is None; UnknownDutError if `dut_id` neither reported nor is configured.
    A configured DUT without reports is a calibration where every step is a missed
    detection."""
    run, steps, duts = await load(store, config, run_id, dut_id)
    if dut_id is not None and not duts and dut_id not in config.dut:
        reported = [dut for (dut,) in await store.query(
            "SELECT DISTINCT dut_id FROM dut_reports WHERE run_id = ? ORDER BY dut_id",
            run_id)]
        raise UnknownDutError(
            f"DUT '{dut_id}' sent no report in run {run_id} and has no [dut.{dut_id}] "
            f"table: a misspelt id? (reports from: {', '.join(reported) or 'none'})")
    if dut_id is None and len(duts) > 1:
        raise AmbiguousDutError(
            f"run {run_id} has reports of {len(duts)} DUTs "
            f"({', '.join(dut.dut_id for dut in duts)}): name one with --dut")
    dut = duts[0] if duts else None
    chosen = dut.dut_id if dut is not None else dut_id
    matching = (dut.matching if dut is not None
                else match_reports(steps, [], params_for(config, chosen or "")))
    positions = await point_positions(
        store, {step["position_id"] for step in steps if step["position_id"] is not None})
    results = compute_results(run_id, run["software"], steps, matching, positions)
    return Calibration(run, steps, positions, chosen, dut, results)
