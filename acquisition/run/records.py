"""The rows a run leaves in the store: the run itself and each of its steps."""

from __future__ import annotations

import json
import time
from typing import Any

from acquisition import __version__
from acquisition.config.station import StationConfig, config_hash
from acquisition.run.ranging import Assignment
from acquisition.run.sequence import Plan, PlannedStep
from acquisition.run.truth import Truth
from acquisition.site.site import Site


def step_row(run_id: str | None, step: PlannedStep, assignment: Assignment, site: Site
             ) -> dict[str, Any]:
    """A step as armed: target, MFC and setpoint, and the release point's position row."""
    return {
        "run_id": run_id, "idx": step.index, "release_point": step.point,
        "target_value": step.target_value, "target_unit": step.target_unit,
        "mfcs_json": json.dumps({"mfc": assignment.mfc, "setpoint": assignment.setpoint,
                                 "fraction_of_fs": assignment.fraction_of_fs,
                                 "target_kg_h": step.target_kg_h}),
        "t_start_ns": time.time_ns(),
        "position_id": site.position_ids.get(step.point),
    }


def run_row(config: StationConfig, site: Site, run_id: str | None, plan: Plan,
            operator: str | None, dut: str | None) -> dict[str, Any]:
    """A run as started: what, with what, by whom, where the points were, clock offset."""
    inventory = {name: mfc.model_dump(include={"model", "serial_number", "firmware",
                                               "certificate_id", "profile", "full_scale"})
                 for name, mfc in config.mfcs.items()}
    points = sorted({step.point for step in plan.steps})
    positions = {point: (position.to_dict() if (position := site.position(point)) else None)
                 for point in points}
    return {
        "id": run_id, "station": config.station, "sequence_name": plan.spec.name,
        "sequence_json": json.dumps({"definition": json.loads(plan.definition_json),
                                     "plan": plan.to_dict()}, default=str),
        "sequence_hash": plan.sequence_hash, "config_hash": config_hash(config),
        "operator": operator, "dut": dut, "software": __version__,
        "inventory_json": json.dumps(inventory), "positions_json": json.dumps(positions),
        "clock_offset_s": site.clock.offset_s if site.clock else None,
        "t_start_ns": time.time_ns(), "status": "running",
    }


def ended_step_row(armed: dict[str, Any], flags: list[str], truth: Truth | None,
                   stable_at_mono_ns: int | None) -> dict[str, Any]:
    """The step's row as it ended: stable when, QC flags, and the truth with its budget."""
    now_ns, now_mono_ns = time.time_ns(), time.monotonic_ns()
    row = armed | {
        "t_end_ns": now_ns,
        "t_stable_ns": (now_ns - (now_mono_ns - stable_at_mono_ns)
                        if stable_at_mono_ns is not None else None),
        "stable": int(stable_at_mono_ns is not None),
        "qc_flags": ",".join(flags) or None,
    }
    if truth is not None:
        row |= {"truth_mean": truth.mean_kg_h, "truth_std": truth.std_kg_h,
                "truth_n": truth.n, "truth_unit": "kg/h", "u_standard": truth.u_kg_h,
                "u_expanded": truth.expanded_kg_h, "budget_json": json.dumps(truth.to_dict())}
    return row
