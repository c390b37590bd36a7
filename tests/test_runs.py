"""`crf runs list | show | export` on the session's real calibrated run, as subprocesses:
the listing and the run's steps as the store has them; the bundle's tables read back with
pandas (Parquet, and CSV with the call run.json gives) equal to the store, read with
sqlite3, to the value and the nanosecond; the results as load_calibration computes them;
several DUTs; the errors a person meets. And the export's reader: nulls that begin only
after its first batch, the columns' nullability against the store's schema, and one
snapshot of a store that the daemon goes on writing; the reading ahead of the writing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from acquisition.cli.main import main
from acquisition.config.station import load_config
from acquisition.export.bundle import read_ahead
from acquisition.export.reader import BATCH_ROWS, StoreReader
from acquisition.export.tables import SAMPLES, TABLES, TIME
from acquisition.results.calibration import MISSED_DETECTION
from acquisition.results.loader import load_calibration
from acquisition.store.store import Store, StoreError
from drivers.sample import Quality, Sample
from tests.calibrated import CalibratedRun
from tests.stations import write_station

S = 1_000_000_000

# The store's rows of each exported table, every column but run_id, in a stable order.
STORE_TABLES = {
    "samples": ("SELECT t_ns, device, channel, value, unit, quality, detail FROM samples_v"
                " WHERE run_id = ? ORDER BY t_ns, device, channel", ["t_ns", "device", "channel"]),
    "steps": ("SELECT * FROM steps WHERE run_id = ? ORDER BY idx", ["idx"]),
    "events": ("SELECT * FROM events WHERE run_id = ? ORDER BY id", ["id"]),
    "dut_reports": ("SELECT * FROM dut_reports WHERE run_id = ? ORDER BY id", ["id"]),
    "point_positions": ("SELECT * FROM point_positions WHERE id IN"
                        " (SELECT position_id FROM steps WHERE run_id = ?) ORDER BY id", ["id"]),
}
# Where the columns of each table are declared (samples_v joins samples and channels).
DECLARED_IN = {"samples": ("samples", "channels")}


def crf_runs(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "acquisition.cli", "runs", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False)


def store_rows(path: Path, sql: str, *params: Any) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(path)) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(sql, params)]


def declared_types(path: Path, table: str) -> dict[str, tuple[str, bool]]:
    """column -> (declared type, may be null), from the store's own schema."""
    types = {}
    for name in DECLARED_IN.get(table, (table,)):
        for column in store_rows(path, f"PRAGMA table_info({name})"):
            types[column["name"]] = (column["type"], not (column["notnull"] or column["pk"]))
    return types


def copy_of(run: CalibratedRun, workdir: Path) -> Path:
    """A config whose store is a copy of the calibrated run's: free to write."""
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "store.sqlite"
    with closing(sqlite3.connect(run.config.storage.path)) as source, \
            closing(sqlite3.connect(store)) as copy:
        source.backup(copy)
    text = run.config_path.read_text().replace(str(run.config.storage.path), str(store))
    config_path = workdir / run.config_path.name
    config_path.write_text(text)
    assert load_config(config_path).storage.path == store
    return config_path


def assert_matches_store(frame: pd.DataFrame, rows: list[dict[str, Any]],
                         types: dict[str, tuple[str, bool]], from_csv: bool) -> None:
    """Every column of the frame equals the store's, with the dtype its declaration asks
    for; a timestamp column `x` equals the store's `x_ns` to the nanosecond."""
    assert len(frame) == len(rows)
    times = [column for column in frame.columns if f"{column}_ns" in types]
    assert set(frame.columns) - set(times) == set(rows[0]) - {"run_id"}
    for column in frame.columns:
        values = [None if pd.isna(value) else value for value in frame[column].tolist()]
        if column in times:
            assert str(frame[column].dtype) == "datetime64[ns, UTC]", column
            assert [None if value is None else value.value for value in values] == [
                row[f"{column}_ns"] for row in rows], column
            continue
        declared, nullable = types[column]
        expected = [row[column] for row in rows]
        if declared == "INTEGER":
            assert str(frame[column].dtype) == ("Int64" if nullable else "int64"), column
        elif declared == "REAL":
            assert str(frame[column].dtype) == "float64", column
        else:
            assert pd.api.types.is_string_dtype(frame[column].dtype), column
            if from_csv:  # CSV cannot tell an empty text from null
                expected = [value or None for value in expected]
        assert values == expected, column


@pytest.fixture(scope="module")
def bundle(calibrated_run: CalibratedRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "run"
    result = crf_runs("export", calibrated_run.run_id, "--config", calibrated_run.config_path,
                      "--out", out)
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout
    return out


def test_list_shows_the_run(calibrated_run: CalibratedRun) -> None:
    path = calibrated_run.config.storage.path
    run = store_rows(path, "SELECT * FROM runs WHERE id = ?", calibrated_run.run_id)[0]
    steps = len(store_rows(path, "SELECT idx FROM steps WHERE run_id = ?", run["id"]))
    result = crf_runs("list", "--config", calibrated_run.config_path)
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    cells = dict(zip(re.split(r"\s{2,}", header),
                     next(re.split(r"\s{2,}", line) for line in lines
                          if line.startswith(run["id"])), strict=True))
    assert cells["status"] == run["status"] == "completed"
    assert cells["sequence"] == run["sequence_name"]
    assert cells["DUT"] == run["dut"]
    assert cells["reports from"] == calibrated_run.dut_id
    assert cells["steps"] == str(steps)
    start = datetime.fromisoformat(cells["start (UTC)"]).timestamp()
    assert abs(start - run["t_start_ns"] / S) < 1

    as_json = crf_runs("list", "--config", calibrated_run.config_path, "--json")
    listed = {record["id"]: record for record in map(json.loads, as_json.stdout.splitlines())}
    record = listed[run["id"]]
    assert (record["status"], record["sequence"], record["steps"], record["dut_ids"],
            record["t_start_ns"], record["t_end_ns"]) == (
        run["status"], run["sequence_name"], steps, [calibrated_run.dut_id],
        run["t_start_ns"], run["t_end_ns"])


async def add_run(config_path: Path, run_id: str, start_ns: int, status: str) -> None:
    store = Store(load_config(config_path).storage.path)
    await store.open()
    try:
        await store.create_run({"id": run_id, "station": "test", "config_hash": "x",
                                "software": "test", "t_start_ns": start_ns,
                                "status": "running"})
        await store.finish_run(run_id, status, "stopped by the operator", start_ns + 90 * S)
    finally:
        await store.close()


def test_list_is_newest_first_limited_and_filtered(calibrated_run: CalibratedRun,
                                                   tmp_path: Path) -> None:
    config_path = copy_of(calibrated_run, tmp_path)
    start_ns = store_rows(load_config(config_path).storage.path,
                          "SELECT t_start_ns FROM runs")[0]["t_start_ns"]
    asyncio.run(add_run(config_path, "later", start_ns + 3600 * S, "aborted"))

    def listed(*args: str) -> tuple[list[str], str]:
        result = crf_runs("list", "--config", config_path, *args)
        assert result.returncode == 0, result.stderr
        return [line.split()[0] for line in result.stdout.splitlines()[1:]], result.stderr

    assert listed() == (["later", calibrated_run.run_id], "")
    assert listed("--limit", "1") == (
        ["later"], "1 older run(s) not shown (--limit 0 shows all)\n")
    assert listed("--limit", "0")[0] == ["later", calibrated_run.run_id]
    assert listed("--status", "aborted")[0] == ["later"]
    assert listed("--status", "completed")[0] == [calibrated_run.run_id]
    assert listed("--status", "failed") == ([], f"crf runs list: no runs with status failed in "
                                                f"{load_config(config_path).storage.path}\n")


def test_show_prints_every_step(calibrated_run: CalibratedRun) -> None:
    path = calibrated_run.config.storage.path
    steps = store_rows(path, "SELECT * FROM steps WHERE run_id = ? ORDER BY idx",
                       calibrated_run.run_id)
    samples = store_rows(path, "SELECT count(*) AS n FROM samples WHERE run_id = ?",
                         calibrated_run.run_id)[0]["n"]
    result = crf_runs("show", calibrated_run.run_id, "--config", calibrated_run.config_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert re.search(rf"^run:\s+{calibrated_run.run_id}$", text, re.M)
    assert re.search(r"^operator:\s+tester$", text, re.M)
    assert re.search(rf"^samples:\s+{samples}$", text, re.M)
    assert re.search(rf"^DUT reports:\s+{calibrated_run.dut_id}: \d+$", text, re.M)
    header, *lines = text.split("step(s), times UTC")[1].splitlines()[1:]
    columns = re.split(r"\s{2,}", header)
    rows = [dict(zip(columns, re.split(r"\s{2,}", line), strict=False)) for line in lines]
    assert [row["idx"] for row in rows] == [str(step["idx"]) for step in steps]
    for row, step in zip(rows, steps, strict=True):
        assert row["point"] == step["release_point"]
        truth, unit = row["truth mean"].split()
        assert unit == step["truth_unit"]
        assert float(truth) == pytest.approx(step["truth_mean"], rel=1e-4)
        assert float(row["U (k=2)"].split()[0]) == pytest.approx(step["u_expanded"], rel=1e-4)
        assert row["stable"] == ("yes" if step["stable"] else "no")


def test_export_tables_read_back_equal_to_the_store(
        calibrated_run: CalibratedRun, bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = calibrated_run.config.storage.path
    described = json.loads((bundle / "run.json").read_text(encoding="utf-8"))
    monkeypatch.chdir(bundle)  # the read_csv calls name the files as run.json's neighbours
    assert set(described["tables"]) == set(STORE_TABLES)
    for table, (sql, order) in STORE_TABLES.items():
        rows = store_rows(path, sql, calibrated_run.run_id)
        types = declared_types(path, table)
        assert described["tables"][table]["rows"] == len(rows) > 0, table
        parquet = pd.read_parquet(f"{table}.parquet")
        from_csv = eval(described["tables"][table]["read_csv"], {"pd": pd})
        for frame, is_csv in ((parquet, False), (from_csv, True)):
            frame = frame.sort_values(order, kind="stable").reset_index(drop=True)
            assert_matches_store(frame, rows, types, is_csv)
    assert not list(bundle.glob("*.part"))


def test_export_describes_the_run_and_its_results(calibrated_run: CalibratedRun,
                                                  bundle: Path) -> None:
    path = calibrated_run.config.storage.path
    run = store_rows(path, "SELECT * FROM runs WHERE id = ?", calibrated_run.run_id)[0]
    reports = len(store_rows(path, "SELECT id FROM dut_reports WHERE run_id = ?", run["id"]))
    described = json.loads((bundle / "run.json").read_text(encoding="utf-8"))
    assert described["run"]["id"] == run["id"]
    assert described["run"]["sequence_json"] == json.loads(run["sequence_json"])
    assert described["run"]["positions_json"] == json.loads(run["positions_json"])
    assert pd.Timestamp(described["run"]["t_start"]).value == run["t_start_ns"]
    assert described["exported"]["software"].startswith("crf-daq ")
    columns = {column["name"]: column for column in described["tables"]["samples"]["columns"]}
    assert columns["t"]["dtype"] == "datetime64[ns, UTC]"
    assert columns["value"]["unit"] == "per row: unit"
    assert described["tables"]["samples"]["timestamps"] == ["t"]
    assert described["results"] == {"results.json": {"dut_id": calibrated_run.dut_id,
                                                     "dut_reports": reports}}

    async def results() -> dict[str, Any]:
        store = Store(path)
        await store.open()
        try:
            calibration = await load_calibration(store, calibrated_run.config,
                                                 calibrated_run.run_id)
        finally:
            await store.close()
        return json.loads(json.dumps(calibration.results))

    written = json.loads((bundle / "results.json").read_text(encoding="utf-8"))
    assert written == asyncio.run(results())
    assert written["points"] and written["run_id"] == calibrated_run.run_id


async def add_reports(config_path: Path, run_id: str, dut_id: str, rate_kg_h: float) -> None:
    """Reports of another DUT, one in each step's hold, into a copy of the store."""
    config = load_config(config_path)
    store = Store(config.storage.path)
    await store.open()
    try:
        holds = await store.query("SELECT t_stable_ns, t_end_ns FROM steps WHERE run_id = ?"
                                  " ORDER BY idx", run_id)
        await store.add_dut_reports([
            {"run_id": run_id, "dut_id": dut_id, "source": "import", "received_ns": end,
             "t_ns": (stable + end) // 2, "rate": rate_kg_h, "unit": "kg/h",
             "rate_kg_h": rate_kg_h, "detected": 1, "raw": "{}", "import_key": f"{dut_id}{end}"}
            for stable, end in holds])
    finally:
        await store.close()


def test_several_duts_each_get_their_results(calibrated_run: CalibratedRun,
                                            tmp_path: Path) -> None:
    config_path = copy_of(calibrated_run, tmp_path / "copy")
    asyncio.run(add_reports(config_path, calibrated_run.run_id, "d2", 0.2))
    each = crf_runs("export", calibrated_run.run_id, "--config", config_path,
                    "--out", tmp_path / "each")
    assert each.returncode == 0, each.stderr
    files = sorted(path.name for path in (tmp_path / "each").glob("results*.json"))
    assert files == [f"results-{calibrated_run.dut_id}.json", "results-d2.json"]
    d2 = json.loads((tmp_path / "each" / "results-d2.json").read_text())
    assert {point["dut_kg_h"] for point in d2["points"]} == {0.2}

    chosen = crf_runs("export", calibrated_run.run_id, "--config", config_path,
                      "--out", tmp_path / "d2", "--dut", "d2")
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads((tmp_path / "d2" / "results.json").read_text()) == d2
    reports = pd.read_parquet(tmp_path / "d2" / "dut_reports.parquet")
    assert set(reports["dut_id"]) == {"d2"}
    described = json.loads((tmp_path / "d2" / "run.json").read_text())
    assert described["tables"]["dut_reports"]["rows"] == len(reports) > 0

    unknown = crf_runs("export", calibrated_run.run_id, "--config", config_path,
                       "--out", tmp_path / "typo", "--dut", "d3")
    assert unknown.returncode == 1
    assert "d3" in unknown.stderr and len(unknown.stderr.splitlines()) == 1
    assert not (tmp_path / "typo").exists()


def test_a_run_without_reports_has_every_point_missed(calibrated_run: CalibratedRun,
                                                      tmp_path: Path) -> None:
    config_path = copy_of(calibrated_run, tmp_path / "copy")
    with closing(sqlite3.connect(load_config(config_path).storage.path)) as db, db:
        db.execute("DELETE FROM dut_reports")
    result = crf_runs("export", calibrated_run.run_id, "--config", config_path,
                      "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["points"]
    for point in results["points"]:
        assert point["n_valid"] == 0
        assert {f"{MISSED_DETECTION}:{repeat['step']}" for repeat in point["repeats"]} <= set(
            point["flags"])
    described = json.loads((tmp_path / "out" / "run.json").read_text())
    assert described["results"]["results.json"]["dut_id"] is None
    assert described["tables"]["dut_reports"]["rows"] == 0
    assert len(pd.read_parquet(tmp_path / "out" / "dut_reports.parquet")) == 0


def test_unknown_run_names_the_latest(calibrated_run: CalibratedRun, tmp_path: Path) -> None:
    for command in (["show"], ["export", "--out", tmp_path / "out"]):
        result = crf_runs(*command, "20990101T000000Z-0000", "--config",
                          calibrated_run.config_path)
        assert result.returncode == 1
        assert result.stdout == ""
        assert len(result.stderr.splitlines()) == 1
        assert "20990101T000000Z-0000" in result.stderr
        assert calibrated_run.run_id in result.stderr
    assert not (tmp_path / "out").exists()


def test_missing_store_is_one_line(tmp_path: Path) -> None:
    config_path = write_station(tmp_path)
    for command in (["list"], ["show", "R1"], ["export", "R1", "--out", tmp_path / "out"]):
        result = crf_runs(*command, "--config", config_path)
        assert result.returncode == 1
        assert result.stderr.strip() == (f"crf runs {command[0]}: no run store at "
                                         f"{load_config(config_path).storage.path}")
    assert not (tmp_path / "store.sqlite").exists()


def test_reading_tools_leave_the_store_byte_for_byte(calibrated_run: CalibratedRun,
                                                    tmp_path: Path) -> None:
    """A calibration record's checksum must not change because someone listed its runs
    or made its certificate: every tool that only reads opens the store read-only."""
    config_path = copy_of(calibrated_run, tmp_path / "copy")
    store = load_config(config_path).storage.path
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    run_id = calibrated_run.run_id
    for command in (["runs", "list"], ["runs", "show", run_id], ["dut", "show", run_id],
                    ["runs", "export", run_id, "--out", tmp_path / "bundle"],
                    ["report", run_id, "--out", tmp_path / "report", "--lang", "en"]):
        assert main([*map(str, command), "--config", str(config_path)]) == 0, command
        assert hashlib.sha256(store.read_bytes()).hexdigest() == before, command


@pytest.mark.parametrize(("user_version", "words"), [
    (1, "schema version 1, this crf-daq reads 2 (run `crf daemon` on it once"),
    (0, "not a crf-daq run store"),
    (3, "schema version 3, this crf-daq reads 2"),
])
def test_a_store_of_another_schema_is_refused_by_the_reading_tools(
        calibrated_run: CalibratedRun, tmp_path: Path, user_version: int, words: str) -> None:
    config_path = copy_of(calibrated_run, tmp_path / "copy")
    with closing(sqlite3.connect(load_config(config_path).storage.path)) as db:
        db.execute(f"PRAGMA user_version={user_version}")
    result = crf_runs("list", "--config", config_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("crf runs list: ") and words in result.stderr


def test_a_folder_in_use_is_refused_and_a_failed_export_leaves_no_bundle(
        calibrated_run: CalibratedRun, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused = crf_runs("export", calibrated_run.run_id, "--config", calibrated_run.config_path,
                       "--out", out)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"crf runs export: {out} is not empty")
    assert sorted(path.name for path in out.iterdir()) == ["notes.txt"]

    (out / "steps.csv.part").mkdir()  # where the steps' CSV would be written: it fails
    failed = crf_runs("export", calibrated_run.run_id, "--config", calibrated_run.config_path,
                      "--out", out, "--force")
    assert failed.returncode == 1
    assert failed.stderr.startswith("crf runs export: cannot write")
    assert len(failed.stderr.splitlines()) == 1
    names = {path.name for path in out.iterdir()}
    assert not names & {"steps.parquet", "steps.csv", "steps.parquet.part", "run.json"}

    (out / "steps.csv.part").rmdir()
    forced = crf_runs("export", calibrated_run.run_id, "--config", calibrated_run.config_path,
                      "--out", out, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (out / "run.json").exists() and (out / "notes.txt").read_text() == "mine"


async def add_samples(path: Path, run_id: str, samples: list[Sample]) -> None:
    """Samples of `run_id` committed as the daemon's recorder commits them."""
    store = Store(path)
    await store.open()
    try:
        await store.add_samples([(sample, run_id) for sample in samples])
    finally:
        await store.close()


def samples_from(start_ns: int, count: int, ok: bool) -> list[Sample]:
    """`count` samples 1 ms apart of three channels in turn; not ok ones without a value
    and without detail."""
    channels = [("analyzer", "ch4", "ppm"), ("mfc_low", "flow", "SLPM"), ("weather", "t", "C")]
    samples = []
    for i in range(count):
        device, channel, unit = channels[i % len(channels)]
        samples.append(Sample(start_ns + i * 1_000_000, 0, device, channel,
                              i / 7 if ok else None, unit,
                              Quality.OK if ok else Quality.TIMEOUT,
                              f"reading {i}" if ok else None))
    return samples


def test_nulls_filling_the_first_batch_are_exported_as_null(tmp_path: Path) -> None:
    """A reader that took a column's type from a first batch of nulls would fail on the
    floats and texts after it."""
    config_path = write_station(tmp_path)
    start_ns = 1_780_000_000 * S
    asyncio.run(add_run(config_path, "R1", start_ns, "completed"))
    path = load_config(config_path).storage.path
    nulls = 100_000
    assert nulls > BATCH_ROWS
    asyncio.run(add_samples(path, "R1", samples_from(start_ns, nulls, ok=False)))
    asyncio.run(add_samples(path, "R1", samples_from(start_ns + nulls * 1_000_000, 20_000,
                                                     ok=True)))
    result = crf_runs("export", "R1", "--config", config_path, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    sql, order = STORE_TABLES["samples"]
    rows = store_rows(path, sql, "R1")
    described = json.loads((tmp_path / "out" / "run.json").read_text(encoding="utf-8"))
    from_csv = eval(described["tables"]["samples"]["read_csv"].replace(
        "'samples.csv'", repr(str(tmp_path / "out" / "samples.csv"))), {"pd": pd})
    for frame, is_csv in ((pd.read_parquet(tmp_path / "out" / "samples.parquet"), False),
                          (from_csv, True)):
        assert frame["value"].isna().sum() == frame["detail"].isna().sum() == nulls
        frame = frame.sort_values(order, kind="stable").reset_index(drop=True)
        assert_matches_store(frame, rows, declared_types(path, "samples"), is_csv)


def test_columns_say_where_the_store_may_hold_null(tmp_path: Path) -> None:
    """The reader reads a nullable column with a null flag and any other as it is: each
    column must say what the store's schema allows."""
    path = tmp_path / "store.sqlite"
    asyncio.run(add_samples(path, "R1", []))  # opened as the daemon opens it: the schema
    for table in TABLES:
        types = declared_types(path, table.name)
        for column in table.columns:
            if column.type is not TIME:
                assert column.nullable == types[column.name][1], (table.name, column.name)


def test_the_reader_sees_one_moment_of_a_store_being_written(tmp_path: Path) -> None:
    config_path = write_station(tmp_path)
    start_ns = 1_780_000_000 * S
    asyncio.run(add_run(config_path, "R1", start_ns, "completed"))
    path = load_config(config_path).storage.path
    asyncio.run(add_samples(path, "R1", samples_from(start_ns, 10, ok=True)))

    def exported(reader: StoreReader) -> int:
        return sum(batch.num_rows for batch in reader.batches(SAMPLES, ("R1",)))

    with StoreReader(path) as reader:
        before = exported(reader)
        # The daemon writes on while an export reads (it would fail here if it could not).
        asyncio.run(add_samples(path, "R1", samples_from(start_ns + 10 * S, 5, ok=True)))
        assert exported(reader) == before == 10
    with StoreReader(path) as reader:
        assert exported(reader) == 15


async def test_read_ahead_keeps_order_and_failures_and_closes_when_stopped() -> None:
    closed: list[str] = []

    def batches(fail_at: int | None = None) -> Iterator[int]:
        try:
            for number in range(5):
                if number == fail_at:
                    raise StoreError("store.sqlite: cannot read run store: disk I/O error")
                yield number
        finally:
            closed.append("closed")

    assert [number async for number in read_ahead(batches())] == [0, 1, 2, 3, 4]
    with pytest.raises(StoreError, match="disk I/O error"):
        [number async for number in read_ahead(batches(fail_at=3))]
    stopped = read_ahead(batches())
    assert await anext(stopped) == 0
    await stopped.aclose()  # as when writing a file fails: the reading stops and closes too
    assert closed == ["closed"] * 3
