"""What the record and the certificate show, assembled from a run's Calibration, its steps'
conditions and its events: plain dicts and lists for the templates, every label in the
report's language(s), every figure still a number (the templates format them)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from acquisition.config.station import StationConfig
from acquisition.dut.matching import AMBIGUOUS, WIND_RUN_SHORT, ReportMatch
from acquisition.report import plots
from acquisition.report.conditions import StepConditions, conditions_device, covering_arc
from acquisition.report.formatting import MISSING, duration, utc
from acquisition.report.gather import RunData
from acquisition.report.labels import Labels
from acquisition.results.loader import Calibration

# A component's distinct bases shown in the budget's legend (the readback mean's differs
# at every step: its s and n are the steps table's).
BASES_SHOWN = 3


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _number(idx: int) -> int:
    """Steps are numbered from 1 on paper (the store's idx counts from 0)."""
    return idx + 1


def _mfc(step: Mapping[str, Any]) -> str:
    used = _json(step["mfcs_json"])
    return str(used.get("mfc", MISSING)) if isinstance(used, dict) else MISSING


def _relative_pct(part: float | None, step: Mapping[str, Any]) -> float | None:
    """`part` relative to the step's truth; none for a blank, which released nothing."""
    whole = step["truth_mean"]
    return 100 * part / whole if part is not None and whole and step["target_value"] else None


def _when(report: Mapping[str, Any]) -> str:
    if report.get("window_start_ns") is None:
        return utc(report["t_ns"])
    return f"{utc(report['window_start_ns'])} – {utc(report['window_end_ns'], False)}"


def _report_row(match: ReportMatch, labels: Labels) -> dict[str, Any]:
    report = match.report
    why = ""
    if match.step is None:
        why = labels.term(match.flags[0])
        if match.flags[0] == AMBIGUOUS:
            why += ": " + ", ".join(str(_number(idx)) for idx in match.candidates)
        elif match.flags[0] == WIND_RUN_SHORT and match.wind_run_m is not None:
            why += f": {match.wind_run_m:.0f} m"
    return {"id": report["id"], "when": _when(report), "rate": report["rate"],
            "unit": report["unit"], "rate_kg_h": report["rate_kg_h"], "lat": report["lat"],
            "lon": report["lon"], "detected": labels("yes" if report["detected"] else "no"),
            "why": why}


def _budget_items(step: Mapping[str, Any]) -> list[dict[str, Any]]:
    truth = _json(step["budget_json"])
    items = truth.get("budget", []) if isinstance(truth, dict) else []
    return [item for item in items if isinstance(item, dict) and "name" in item]


def _budgets(steps: Sequence[Mapping[str, Any]], labels: Labels) -> dict[str, Any]:
    """Every step's uncertainty budget as one table, a row per step and a column per
    component (a long run has hundreds of steps: a row per component would be thousands),
    and a legend of the components: type, and basis (distribution) as recorded."""
    legend: dict[str, dict[str, Any]] = {}  # by component, in the order first met
    rows: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (cells by component, row)
    for step in steps:
        items = {item["name"]: item for item in _budget_items(step)}
        for name, item in items.items():
            if name not in legend:
                legend[name] = {"name": labels.term(name), "bases": [],
                                "evaluation": labels.term(str(item.get("evaluation")))}
            bases = legend[name]["bases"]
            if item.get("basis") not in bases:
                bases.append(item.get("basis"))
        if items:
            released = bool(step["target_value"])  # a blank's relative u means nothing
            cells = {name: (item.get("u_kg_h"), item.get("u_rel_pct") if released else None)
                     for name, item in items.items()}
            rows.append((cells, {"number": _number(step["idx"]),
                                 "u_standard": step["u_standard"],
                                 "u_expanded": step["u_expanded"],
                                 "u_expanded_rel": _relative_pct(step["u_expanded"], step)}))
    return {"components": [(name, entry["name"]) for name, entry in legend.items()],
            "rows": [row | {"cells": [cells.get(name) for name in legend]}
                     for cells, row in rows],
            "legend": [entry | {"shown": entry["bases"][:BASES_SHOWN],
                                "more": max(len(entry["bases"]) - BASES_SHOWN, 0)}
                       for entry in legend.values()]}


def _conditions_row(conditions: StepConditions, labels: Labels) -> dict[str, Any]:
    direction = conditions.direction
    return {"stats": conditions.stats,
            "direction": direction.mean_deg if direction else None,
            "direction_spread": direction.spread_deg if direction else None,
            "outside": [labels.term(name) for name in conditions.outside]}


def _steps(calibration: Calibration, conditions: Sequence[StepConditions],
           labels: Labels) -> list[dict[str, Any]]:
    by_idx = {item.step: item for item in conditions}
    matching = calibration.matching
    rows = []
    for step in calibration.steps:
        position = calibration.positions.get(step["position_id"])
        counted = matching.steps.get(step["idx"], ()) if matching else ()
        rows.append({
            "number": _number(step["idx"]), "point": step["release_point"] or MISSING,
            "target": f"{step['target_value']:g} {step['target_unit']}",
            "mfc": _mfc(step), "start": utc(step["t_start_ns"]),
            "stable_at": utc(step["t_stable_ns"], False), "end": utc(step["t_end_ns"], False),
            "stable": labels("yes" if step["stable"] else "no"),
            "truth": step["truth_mean"], "truth_std": step["truth_std"],
            "truth_n": step["truth_n"], "u_expanded": step["u_expanded"],
            "u_expanded_rel": _relative_pct(step["u_expanded"], step),
            "qc_flags": labels.flags(flag for flag in (step["qc_flags"] or "").split(",")
                                     if flag),
            "position": position,
            "conditions": _conditions_row(by_idx[step["idx"]], labels),
            "reports": [_report_row(match, labels) for match in counted],
        })
    return rows


def _devices(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    inventory = _json(run["inventory_json"]) or {}
    return [{"name": name, **fields} for name, fields in sorted(inventory.items())]


def _run_fields(run: Mapping[str, Any], labels: Labels) -> list[tuple[str, Any]]:
    sequence = _json(run["sequence_json"]) or {}
    seed = (sequence.get("plan") or {}).get("seed") if isinstance(sequence, dict) else None
    offset = run["clock_offset_s"]
    return [
        (labels("run_id"), run["id"]),
        (labels("status"), labels.term(run["status"])),
        (labels("reason"), run["reason"] or MISSING),
        (labels("start"), utc(run["t_start_ns"])),
        (labels("end"), utc(run["t_end_ns"])),
        (labels("duration"), duration(run["t_start_ns"], run["t_end_ns"])),
        (labels("sequence"), run["sequence_name"] + (f" (seed {seed})" if seed else "")),
        (labels("sequence_hash"), run["sequence_hash"] or MISSING),
        (labels("config_hash"), run["config_hash"]),
        (labels("software"), f"crf-daq {run['software']}"),
        (labels("station"), run["station"]),
        (labels("operator"), run["operator"] or MISSING),
        (labels("dut"), run["dut"] or MISSING),
        (labels("clock_offset"), f"{offset:+.3f} s" if offset is not None else MISSING),
    ]


def _matching_fields(calibration: Calibration, config: StationConfig,
                     labels: Labels) -> list[tuple[str, Any]]:
    matching = calibration.matching
    dut_id = calibration.dut_id
    fields: list[tuple[str, Any]] = [(labels("dut_id"), dut_id or labels("none"))]
    if dut_id is not None:
        source = f"[dut.{dut_id}]" if dut_id in config.dut else labels("not_configured")
        fields.append((labels("configured"), source))
    if matching is not None:
        fields += [(key, MISSING if value is None else value)
                   for key, value in matching.params.to_dict().items()]
    return fields


def record(data: RunData, config: StationConfig, labels: Labels) -> dict[str, Any]:
    """The original calibration record (the specification's Appendix A)."""
    calibration = data.calibration
    matching = calibration.matching
    return {
        "title": labels("record_title"), "run_id": calibration.run["id"],
        "run_fields": _run_fields(calibration.run, labels),
        "dut_fields": _matching_fields(calibration, config, labels),
        "devices": _devices(calibration.run),
        "positions": sorted(calibration.positions.values(), key=lambda row: row["id"]),
        "steps": _steps(calibration, data.conditions, labels),
        "budgets": _budgets(calibration.steps, labels),
        "met_device": conditions_device(config),
        "unassigned": [_report_row(match, labels) for match in matching.unassigned]
        if matching else [],
        "events": data.events,
        "timeline": plots.timeline(calibration.steps, matching, labels),
    }


def _span(values: Sequence[float]) -> tuple[float, float] | None:
    return (min(values), max(values)) if values else None


def _observed(conditions: Sequence[StepConditions], config: StationConfig,
              labels: Labels) -> list[dict[str, Any]]:
    """One row per condition: the range seen over every hold, the limit, the verdict."""
    limits = config.certificate.conditions
    rows = []
    for name, label, unit in (("temperature_c", "temperature", "°C"),
                              ("pressure_kpa", "pressure", "kPa"),
                              ("wind_speed_m_s", "wind_speed", "m/s")):
        stats = [item.stats[name] for item in conditions if name in item.stats]
        limit = getattr(limits, name)
        rows.append({
            "label": labels(label), "unit": unit, "sector": False,
            "observed": (min(s.min for s in stats), max(s.max for s in stats)) if stats
            else None,
            "limit": (limit.min, limit.max) if limit.min is not None or limit.max is not None
            else None,
            "outside": [_number(item.step) for item in conditions if name in item.outside]})
    sector = limits.wind_sector_deg
    rows.append({
        "label": labels("wind_direction"), "unit": "°",
        "observed": covering_arc([item.direction.mean_deg for item in conditions
                                  if item.direction is not None]),
        "limit": sector, "sector": True,
        "outside": [_number(item.step) for item in conditions
                    if "wind_sector_deg" in item.outside]})
    return rows


def _used_devices(calibration: Calibration) -> list[dict[str, Any]]:
    used = {_mfc(step) for step in calibration.steps if step["target_value"]}
    return [device for device in _devices(calibration.run) if device["name"] in used]


def _standard(calibration: Calibration) -> dict[str, Any]:
    """The CRF as the standard: the range of truths it released and of their relative U."""
    released = [step for step in calibration.steps
                if step["target_value"] and step["truth_mean"] and step["u_expanded"]]
    return {"range_kg_h": _span([step["truth_mean"] for step in released]),
            "u_rel_pct": _span([100 * step["u_expanded"] / step["truth_mean"]
                                for step in released]),
            "devices": _used_devices(calibration)}


def _positions_by_point(positions: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each release point's first position used, and how many more (a GNSS-surveyed point
    is located again during the run; the record lists every one)."""
    by_point: dict[str, list[Mapping[str, Any]]] = {}
    for position in sorted(positions, key=lambda row: row["t_ns"]):
        by_point.setdefault(position["point"], []).append(position)
    return [{**rows[0], "more": len(rows) - 1} for _, rows in sorted(by_point.items())]


def certificate(data: RunData, config: StationConfig, labels: Labels) -> dict[str, Any]:
    """The certificate's results page (the specification's Appendix B)."""
    calibration = data.calibration
    results = calibration.results
    settings = config.certificate
    outside = [(_number(item.step), [labels.term(name) for name in item.outside])
               for item in data.conditions if item.outside]
    observed = _observed(data.conditions, config, labels)
    return {
        "title": labels("certificate_title"), "run_id": calibration.run["id"],
        "laboratory": settings.laboratory, "address": settings.address,
        "specification": settings.specification or labels("default_specification"),
        "standard_name": settings.standard_name or labels("default_standard"),
        "standard": _standard(calibration),
        "dut_id": calibration.dut_id,
        # what the operator wrote when starting the run, unless it only repeats the id
        "dut_description": (calibration.run["dut"]
                            if calibration.run["dut"] != calibration.dut_id else None),
        "station": calibration.run["station"],
        "release_points": _positions_by_point(calibration.positions.values()),
        "dates": (utc(calibration.run["t_start_ns"]), utc(calibration.run["t_end_ns"])),
        "met_device": conditions_device(config),
        "conditions": observed,
        "limited": any(row["limit"] is not None for row in observed), "outside": outside,
        "points": [{**point, "flags": labels.flags(point["flags"])}
                   for point in results["points"]],
        "blanks": [{**blank, "step": _number(blank["step"])} for blank in results["blanks"]],
        "parity": results["parity"],
        "formulas": results["formulas"],
        "recalibration": labels.each("recalibration",
                                     months=settings.recalibration_interval_months),
        "plots": [(labels("parity_plot"), plots.parity(results, labels)),
                  (labels("localization_plot"),
                   plots.localization(results, calibration.steps, calibration.positions,
                                      labels))],
    }
