"""`crf runs list` and `crf runs show`: which runs the store holds, and one run with its
steps, read from the store and printed as aligned tables (or JSON lines for scripts)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from acquisition.dut.records import require_run, run_steps
from acquisition.store.store import Store
from acquisition.times import NS_PER_S, iso_utc, utc_seconds

DAY_NS = 86_400 * NS_PER_S


def duration(start_ns: int, end_ns: int | None) -> str:
    """H:MM:SS, or '-' for a run not ended."""
    if end_ns is None:
        return "-"
    seconds = round((end_ns - start_ns) / NS_PER_S)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def aligned(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Columns padded to their widest cell; the last one is not padded."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)


async def list_runs(store: Store, limit: int | None, status: str | None
                    ) -> tuple[list[dict[str, Any]], int]:
    """The newest `limit` runs (all with None), of `status` if given, and how many match."""
    where = "WHERE status = ?1" if status else "WHERE ?1 IS NULL"
    runs = await store.records(
        "SELECT id, status, reason, sequence_name, dut, t_start_ns, t_end_ns,"
        " (SELECT count(*) FROM steps WHERE run_id = runs.id) AS steps,"
        " (SELECT group_concat(dut_id, ',') FROM (SELECT DISTINCT dut_id FROM dut_reports"
        "   WHERE run_id = runs.id ORDER BY dut_id)) AS dut_ids"
        f" FROM runs {where} ORDER BY t_start_ns DESC, id DESC LIMIT ?2",
        status, -1 if limit is None else limit)
    total = (await store.query(f"SELECT count(*) FROM runs {where}", status))[0][0]
    return runs, int(total)


def list_json(run: dict[str, Any]) -> str:
    """One run of `list_runs` as a JSON object on one line."""
    ended = run["t_end_ns"]
    return json.dumps({
        "id": run["id"], "status": run["status"], "reason": run["reason"],
        "sequence": run["sequence_name"], "dut": run["dut"],
        "dut_ids": run["dut_ids"].split(",") if run["dut_ids"] else [],
        "start": iso_utc(run["t_start_ns"]), "t_start_ns": run["t_start_ns"],
        "end": iso_utc(ended) if ended is not None else None, "t_end_ns": ended,
        "duration_s": (ended - run["t_start_ns"]) / NS_PER_S if ended is not None else None,
        "steps": run["steps"]}, ensure_ascii=False)


def render_list(runs: list[dict[str, Any]], out: TextIO) -> None:
    aligned(("id", "status", "sequence", "DUT", "reports from", "start (UTC)", "duration",
             "steps"),
            [(run["id"], run["status"], run["sequence_name"] or "-", run["dut"] or "-",
              run["dut_ids"] or "-", utc_seconds(run["t_start_ns"]),
              duration(run["t_start_ns"], run["t_end_ns"]), str(run["steps"]))
             for run in runs], out)


@dataclass(frozen=True)
class RunSummary:
    run: dict[str, Any]  # the runs row, every column
    steps: list[dict[str, Any]]  # the steps rows, in order
    samples: int
    events: int
    reports: dict[str, int]  # DUT reports by DUT id


async def run_summary(store: Store, run_id: str) -> RunSummary:
    """The run, its steps and what it recorded; UnknownRunError if there is no such run."""
    run = await require_run(store, run_id)
    samples = (await store.query("SELECT count(*) FROM samples WHERE run_id = ?", run_id))[0][0]
    events = (await store.query("SELECT count(*) FROM events WHERE run_id = ?", run_id))[0][0]
    reports = await store.query("SELECT dut_id, count(*) FROM dut_reports WHERE run_id = ?"
                                " GROUP BY dut_id ORDER BY dut_id", run_id)
    return RunSummary(run, await run_steps(store, run_id), int(samples), int(events),
                      {dut: int(count) for dut, count in reports})


def _number(value: float | None, unit: str | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.5g} {unit}" if unit else f"{value:.5g}"


def _clock(t_ns: int | None, day0_ns: int) -> str:
    """Time of day, UTC, with '+Nd' when on a later day than the run's start."""
    if t_ns is None:
        return "-"
    days = t_ns // DAY_NS - day0_ns // DAY_NS
    return utc_seconds(t_ns)[11:19] + (f"+{days}d" if days else "")


def render_show(summary: RunSummary, out: TextIO) -> None:
    """The run's fields, one a line; then its steps, their times UTC on the start's day."""
    run = summary.run
    offset = run["clock_offset_s"]
    fields = [
        ("run", run["id"]),
        ("status", run["status"] + (f": {run['reason']}" if run["reason"] else "")),
        ("sequence", f"{run['sequence_name'] or '-'} (hash {run['sequence_hash'] or '-'})"),
        ("operator", run["operator"] or "-"), ("DUT", run["dut"] or "-"),
        ("station", run["station"]), ("software", f"crf-daq {run['software']}"),
        ("config hash", run["config_hash"]),
        ("start", utc_seconds(run["t_start_ns"])), ("end", utc_seconds(run["t_end_ns"])),
        ("duration", duration(run["t_start_ns"], run["t_end_ns"])),
        ("clock offset", f"{offset:+.3f} s (GNSS minus host clock at the start)"
         if offset is not None else "-"),
        ("samples", str(summary.samples)), ("events", str(summary.events)),
        ("DUT reports", ", ".join(f"{dut}: {count}" for dut, count in summary.reports.items())
         or "none"),
    ]
    for name, value in fields:
        print(f"{name + ':':<14}{value}", file=out)
    print(f"\n{len(summary.steps)} step(s), times UTC on {utc_seconds(run['t_start_ns'])[:10]}:",
          file=out)
    day0 = run["t_start_ns"]
    aligned(("idx", "point", "target", "start", "stable at", "end", "stable", "truth mean",
             "U (k=2)", "flags"),
            [(str(step["idx"]), step["release_point"] or "-",
              _number(step["target_value"], step["target_unit"]),
              _clock(step["t_start_ns"], day0), _clock(step["t_stable_ns"], day0),
              _clock(step["t_end_ns"], day0),
              {1: "yes", 0: "no"}.get(step["stable"], "-"),
              _number(step["truth_mean"], step["truth_unit"]),
              _number(step["u_expanded"], step["truth_unit"]), step["qc_flags"] or "")
             for step in summary.steps], out)
