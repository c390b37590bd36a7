"""Import a DUT's reports from a CSV file into a run: every row is checked first, then
all are written in one transaction, or none.

Columns are named after the report's fields (`dut_id`, `t`, `window_start`, `window_end`,
`rate`, `unit`, `u_rate`, `lat`, `lon`, `detected`) unless the DUT's `columns` table
renames them; other columns are ignored. Times are ISO 8601 or epoch seconds; a time
without a UTC offset is in the DUT's `timezone`. Each row is keyed by the file's sha256
and its line, so that a file imported twice is refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from acquisition.config.station import StationConfig
from acquisition.config.tables import DUT_REPORT_FIELDS
from acquisition.dut.records import require_run
from acquisition.dut.report import DutReport, ReportError, build_report, report_row
from acquisition.store.store import Store

TIME_FIELDS = ("t", "window_start", "window_end")
NUMBER_FIELDS = ("rate", "u_rate", "lat", "lon")
TRUE, FALSE = ("true", "1", "yes", "y"), ("false", "0", "no", "n")


class ImportRefused(Exception):
    """Nothing was imported; `problems` are (line or None, what was wrong)."""

    def __init__(self, problems: list[tuple[int | None, str]]) -> None:
        super().__init__("; ".join(f"line {line}: {text}" if line else text
                                   for line, text in problems))
        self.problems = problems


@dataclass(frozen=True)
class CsvReport:
    line: int  # where its row starts in the file
    report: DutReport
    raw: str  # the row as written


def _records(text: str) -> Iterator[tuple[int, list[str], str]]:
    """(first line, cells, text) of each CSV record; a quoted cell may span lines."""
    consumed: list[str] = []

    def lines() -> Iterator[str]:
        for line in io.StringIO(text, newline=""):  # ends kept: \n, \r\n or \r
            consumed.append(line)
            yield line

    reader = csv.reader(lines())  # reads no further than the record it returns
    for cells in reader:
        first = reader.line_num - len(consumed) + 1
        raw = "".join(consumed).rstrip("\r\n")
        consumed.clear()
        yield first, cells, raw


def _localized(naive: datetime, zone: tzinfo) -> datetime:
    """A wall-clock time of `zone`; ValueError if a daylight-saving change makes it occur
    twice or never."""
    early, late = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
    if early.utcoffset() != late.utcoffset():
        raise ValueError(f"occurs twice or never in {zone} (a daylight-saving change): "
                         "give its UTC offset")
    return early


def _time_cell(cell: str, zone: tzinfo) -> Any:
    """Epoch seconds, an aware time, or the cell as it is (the report's check names it)."""
    try:
        return float(cell)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(cell)
    except ValueError:
        return cell
    return _localized(when, zone) if when.utcoffset() is None else when


def _cell(field: str, cell: str, zone: tzinfo) -> Any:
    """A cell as the report field's value; what cannot be converted stays text."""
    if field in TIME_FIELDS:
        return _time_cell(cell, zone)
    if field in NUMBER_FIELDS:
        try:
            return float(cell)
        except ValueError:
            return cell
    if field == "detected":
        word = cell.lower()
        return True if word in TRUE else False if word in FALSE else cell
    return cell


class _Reader:
    """One file's header, read against the report fields and the DUT's column names."""

    def __init__(self, header: list[str], dut: str | None, config: StationConfig) -> None:
        self.dut = dut
        self.config = config
        renamed = config.dut[dut].columns if dut in config.dut else {}
        self.names = {field: renamed.get(field, field).strip() for field in DUT_REPORT_FIELDS}
        header = [name.strip() for name in header]
        self.width = len(header)
        self.index = {field: header.index(name) for field, name in self.names.items()
                      if name in header}
        repeated = sorted({name for name in header if name and header.count(name) > 1})
        self.problems = [f"column '{name}' appears more than once" for name in repeated
                         if name in self.names.values()]
        needed = ["rate", "unit"] + ([] if dut else ["dut_id"])
        if "t" not in self.index:  # a time, or a window: both of its ends
            window = {"window_start", "window_end"} & set(self.index)
            needed += ["window_start", "window_end"] if window else ["t"]
        self.problems += [self._missing(field) for field in needed if field not in self.index]

    def _missing(self, field: str) -> str:
        name = self.names[field]
        renamed = f" (the report's `{field}`)" if name != field else ""
        alternative = " (or `window_start` and `window_end`)" if field == "t" else ""
        return f"missing column '{name}'{renamed}{alternative}"

    def report(self, cells: list[str]) -> DutReport:
        """The report of one row; ValueError or ReportError naming what is wrong."""
        if len(cells) != self.width:
            raise ValueError(f"{len(cells)} cells, the header has {self.width}")
        values = {field: cells[i].strip() for field, i in self.index.items() if cells[i].strip()}
        row_dut = values.get("dut_id", self.dut)
        if self.dut and row_dut != self.dut:
            raise ValueError(f"dut_id: '{row_dut}' is not the DUT imported ('{self.dut}')")
        zone = ZoneInfo(self.config.dut[row_dut].timezone) if row_dut in self.config.dut else UTC
        fields = {}
        for field, cell in values.items():
            try:
                fields[field] = _cell(field, cell, zone)
            except ValueError as error:
                raise ValueError(f"{field}: '{cell}' {error}") from None
        return build_report(fields | {"dut_id": row_dut}, self.config.gas.species)


def read_csv(data: bytes, dut: str | None, config: StationConfig) -> list[CsvReport]:
    """Every report of a CSV file, or ImportRefused with every problem, line by line.
    `dut` is the DUT of every row; None: each row's `dut_id` column says."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ImportRefused([(None, f"not UTF-8 text: {error}")]) from None
    records = ((line, cells, raw) for line, cells, raw in _records(text)
               if any(cell.strip() for cell in cells))
    header = next(records, None)
    if header is None:
        raise ImportRefused([(None, "the file is empty: no header row")])
    reader = _Reader(header[1], dut, config)
    problems: list[tuple[int | None, str]] = [(header[0], text) for text in reader.problems]
    if problems:
        raise ImportRefused(problems)
    reports = []
    for line, cells, raw in records:
        try:
            reports.append(CsvReport(line, reader.report(cells), raw))
        except (ValueError, ReportError) as error:
            problems.append((line, str(error)))
    if problems:
        raise ImportRefused(problems)
    if not reports:
        raise ImportRefused([(None, "no reports: the file has a header row only")])
    return reports


async def import_csv(store: Store, config: StationConfig, run_id: str, data: bytes,
                     dut: str | None) -> int:
    """Import a CSV file's reports (its bytes) into a run, all or nothing; how many.
    ImportRefused, UnknownRunError, or DuplicateImportError (imported before)."""
    reports = read_csv(data, dut, config)
    await require_run(store, run_id)
    digest = hashlib.sha256(data).hexdigest()
    received_ns = time.time_ns()
    return await store.add_dut_reports([
        report_row(item.report, run_id, received_ns, "import", item.raw)
        | {"import_key": f"{digest}:{item.line}"} for item in reports])
