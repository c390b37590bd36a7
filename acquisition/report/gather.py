"""What a report reads from the run store: the calibration, each step's conditions and the
run's events. Kept apart from the documents, so that a command that fails here (no such
run, several DUTs) has not loaded the plotting and PDF libraries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from acquisition.config.station import StationConfig
from acquisition.report.conditions import StepConditions, step_conditions
from acquisition.results.loader import Calibration, load_calibration
from acquisition.store.store import Store


@dataclass(frozen=True)
class RunData:
    """Everything a report reads from the store for one run and one DUT."""

    calibration: Calibration
    conditions: list[StepConditions]
    events: list[dict[str, Any]]


async def run_events(store: Store, run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The run's events and the station's own (alarms, interlocks) while it ran."""
    end_ns = run["t_end_ns"] if run["t_end_ns"] is not None else 2 ** 63 - 1
    return await store.records(
        "SELECT id, t_ns, kind, detail FROM events WHERE run_id = ?"
        " OR (run_id IS NULL AND t_ns BETWEEN ? AND ?) ORDER BY t_ns, id",
        run["id"], run["t_start_ns"], end_ns)


async def gather(store: Store, config: StationConfig, run_id: str,
                 dut_id: str | None) -> RunData:
    calibration = await load_calibration(store, config, run_id, dut_id)
    conditions = await step_conditions(store, config, run_id, calibration.steps)
    return RunData(calibration, conditions, await run_events(store, calibration.run))
