"""`crf runs export`: one run as a folder that analysis tools read without crf-daq: each
table of tables.py as CSV and Parquet, the calibration results, and run.json describing
it all. Samples are streamed from the store (read-only, through reader.py) to both files a
batch at a time, so a 24-hour run's millions of rows never sit in memory. Every file is
written under a `.part` name and renamed when complete, and run.json comes last: a folder
without it is no bundle.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.csv as arrow_csv
import pyarrow.parquet as pq

from acquisition import __version__
from acquisition.config.station import StationConfig
from acquisition.dut.records import require_run
from acquisition.export.arrow import csv_batch, csv_schema, dictionary_columns, parquet_schema
from acquisition.export.reader import StoreReader
from acquisition.export.tables import TABLES, Table
from acquisition.files import write_json_whole, written_whole
from acquisition.results.loader import Calibration, load_calibration
from acquisition.store.store import Store
from acquisition.times import iso_utc

COMPRESSION = "zstd"
T = TypeVar("T")
HOW_TO_READ = {
    "csv": "UTF-8, comma-separated, one header row; text in double quotes (a quote inside "
           "doubled); an empty field is null, so an empty text reads back as null; floats "
           "written so that they read back exactly; times ISO 8601 UTC with nine fraction "
           "digits and Z, each beside its exact integer <name>_ns",
    "pandas_csv": "import pandas as pd; then tables.<name>.read_csv is the one call that "
                  "gives the table with the dtypes of tables.<name>.columns",
    "pandas_parquet": "pd.read_parquet('<name>.parquet') gives the same dtypes: times "
                      "timestamp[ns, tz=UTC], nullable integers Int64; each field's unit is "
                      "also in its Arrow metadata",
    "units": "tables.<name>.columns[].unit; 'per row: X' means the unit is in column X of "
             "the same row",
}


class ExportError(Exception):
    """The export cannot be made as asked (the folder, the DUT); nothing was written."""


@dataclass(frozen=True)
class Exported:
    out: Path
    rows: dict[str, int]  # by table
    results: dict[str, str | None]  # results file -> its DUT (None: no DUT reported)


async def export_run(store: Store, config: StationConfig, run_id: str, out: Path,
                     dut_id: str | None = None, force: bool = False) -> Exported:
    """Write the bundle of `run_id` into `out` (new or empty; with `force` an earlier
    bundle there is replaced). With `dut_id`, only that DUT's reports and results.

    The tables are one snapshot; the results are computed just before it, so a DUT report
    filed in between (an export while the DUT still reports) is in the tables only."""
    run = await require_run(store, run_id)
    calibrations = await _calibrations(store, config, run_id, dut_id)
    _prepare(out, force)
    rows = await _write_tables(store.path, out, run_id, dut_id)
    for name, calibration in calibrations.items():
        write_json_whole(out / name, calibration.results)
    write_json_whole(out / "run.json", _description(run, rows, calibrations, dut_id))
    return Exported(out, rows, {name: calibration.dut_id
                                for name, calibration in calibrations.items()})


async def _calibrations(store: Store, config: StationConfig, run_id: str,
                        dut_id: str | None) -> dict[str, Calibration]:
    """The results files and their calibrations: the chosen DUT's as results.json; else
    that of the one DUT that reported (or of none: every point a missed detection); else
    one results-<dut>.json per DUT, since DUTs calibrated in one run are calibrated
    together and each one's results are wanted."""
    if dut_id is not None:
        return {"results.json": await load_calibration(store, config, run_id, dut_id)}
    reported = [dut for (dut,) in await store.query(
        "SELECT DISTINCT dut_id FROM dut_reports WHERE run_id = ? ORDER BY dut_id", run_id)]
    if len(reported) <= 1:
        return {"results.json": await load_calibration(store, config, run_id)}
    return {f"results-{dut}.json": await load_calibration(store, config, run_id, dut)
            for dut in reported}


def _prepare(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ExportError(f"{out} is not empty: name a new folder, or --force to "
                              "replace the bundle in it")
        for earlier in [out / "run.json", *out.glob("results*.json")]:
            earlier.unlink(missing_ok=True)  # first: an interrupted export is no bundle
    out.mkdir(parents=True, exist_ok=True)


async def _write_tables(path: Path, out: Path, run_id: str, dut_id: str | None
                        ) -> dict[str, int]:
    """Every table's files, all from one snapshot of the store; each table's row count."""
    with StoreReader(path) as reader:
        return {table.name: await _write_table(reader, table, out,
                                               (run_id, dut_id) if table.by_dut else (run_id,))
                for table in TABLES}


async def _write_table(reader: StoreReader, table: Table, out: Path, params: tuple[Any, ...]
                       ) -> int:
    """Stream the table's rows into its Parquet and CSV files; how many rows. Cancelled
    (Ctrl-C), it stops at the next batch and leaves no file."""
    count = 0
    with (written_whole(out / f"{table.name}.parquet") as parquet_path,
          written_whole(out / f"{table.name}.csv") as csv_path,
          pq.ParquetWriter(parquet_path, parquet_schema(table), compression=COMPRESSION,
                           use_dictionary=dictionary_columns(table)) as parquet,
          arrow_csv.CSVWriter(csv_path, csv_schema(table)) as csv):
        async with aclosing(read_ahead(reader.batches(table, params))) as batches:
            async for batch in batches:
                parquet.write_batch(batch)
                csv.write_batch(csv_batch(table, batch))
                count += batch.num_rows
    return count


async def read_ahead(items: Iterator[T]) -> AsyncIterator[T]:
    """`items` (none of them None), the next one made in a thread of its own while the
    caller handles this one: reading the store and writing the files, both in C without the
    GIL, overlap on two cores (a 24-hour run's samples: 18 s instead of 30)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="crf-export-read") as worker:
        coming = worker.submit(next, items, None)
        try:
            while (item := await asyncio.wrap_future(coming)) is not None:
                coming = worker.submit(next, items, None)
                yield item
        finally:  # also when the caller stops early: `items` closes once its thread is done
            wait([coming])
            if isinstance(items, Generator):
                items.close()


def _run_row(run: dict[str, Any]) -> dict[str, Any]:
    """The runs row with its JSON columns parsed and its times also as ISO 8601."""
    row = {key: json.loads(value) if key.endswith("_json") and value is not None else value
           for key, value in run.items()}
    for key in ("t_start", "t_end"):
        row[key] = iso_utc(run[f"{key}_ns"]) if run[f"{key}_ns"] is not None else None
    return row


def _description(run: dict[str, Any], rows: dict[str, int],
                 calibrations: dict[str, Calibration], dut_id: str | None) -> dict[str, Any]:
    """run.json: the run, who exported it when, each table, the results files."""
    now_ns = time.time_ns()
    results = {name: {"dut_id": calibration.dut_id,
                      "dut_reports": len(calibration.matching.reports)
                      if calibration.matching is not None else 0}
               for name, calibration in calibrations.items()}
    for entry in results.values():
        if entry["dut_reports"] == 0:
            entry["note"] = "no report of this DUT in the run: every point a missed detection"
    return {"run": _run_row(run),
            "exported": {"software": f"crf-daq {__version__}", "at": iso_utc(now_ns),
                         "at_ns": now_ns, "dut_id": dut_id},
            "tables": {table.name: {"rows": rows[table.name], **table.describe()}
                       for table in TABLES},
            "results": results,
            "how_to_read": HOW_TO_READ}
