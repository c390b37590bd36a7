"""Importing DUT reports from CSV files (every bad row named, then all or nothing, a file
only once), the [dut.*] tables that steer it, and `crf dut import` / `crf dut show`."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from acquisition.cli.main import main
from acquisition.config.station import ConfigError, StationConfig
from acquisition.dut.importer import ImportRefused, import_csv, read_csv
from acquisition.dut.records import UnknownRunError
from acquisition.store.store import DuplicateImportError, Store
from drivers.sample import Sample

S = 1_000_000_000
T0 = 1_777_629_600 * S  # 2026-05-01T10:00:00Z, 18:00:00 in Asia/Shanghai

DUTS = """
[met.ws]
transport = "tcp"
host = "127.0.0.1"
tcp_port = 10110
[dut.lidar1]
reporting_delay_s = 0
timezone = "Asia/Shanghai"
columns = { t = "Timestamp", rate = "Q", unit = "Q_unit" }
[dut.ny]
timezone = "America/New_York"
[dut.pointnet]
wind_run_m = 100
wind_device = "ws"
"""

# Holds: step 1 [10, 70] s after T0, step 2 [85, 145] s; step 3 never became stable.
STEPS = [(0, 0, 10, 70, 0.1), (1, 70, 85, 145, 0.2), (2, 145, None, 200, None)]

# lidar1's columns and zone; an extra column, and a note that spans two lines.
LIDAR = ('Timestamp,Q,Q_unit,Notes\n'
         '2026-05-01 18:00:40,110,g/h,ok\n'
         '2026-05-01T10:01:00Z,0.09,kg/h,"two\nlines"\n'
         '1777629700,0.2,kg/h,\n'
         '2026-05-01 18:01:15,0.5,kg/h,between steps\n')


@pytest.fixture
def config(make_config: Callable[..., StationConfig]) -> StationConfig:
    return make_config(extra=DUTS)


async def make_run(config: StationConfig, wind_m_s: float | None = None) -> None:
    """Run R1 with STEPS, as the scheduler leaves them; optionally steady wind at `ws`."""
    store = Store(config.storage.path)
    await store.open()
    try:
        await store.create_run({"id": "R1", "station": "test", "config_hash": "x",
                                "software": "test", "t_start_ns": T0, "t_end_ns": T0 + 200 * S,
                                "status": "completed"})
        for idx, start, stable, end, truth in STEPS:
            await store.save_step({
                "run_id": "R1", "idx": idx, "release_point": "P1", "target_value": 0.1 * idx,
                "target_unit": "kg/h", "t_start_ns": T0 + start * S,
                "t_stable_ns": None if stable is None else T0 + stable * S,
                "t_end_ns": T0 + end * S, "stable": int(stable is not None),
                "truth_mean": truth, "u_expanded": truth and truth / 50,
                "qc_flags": None if stable is not None else "settle_timeout"})
        if wind_m_s is not None:
            await store.add_samples([(Sample(T0 + t * S, 0, "ws", "wind_speed", wind_m_s, "m/s"),
                                      "R1") for t in range(201)])
    finally:
        await store.close()


async def stored(config: StationConfig) -> list[dict[str, Any]]:
    store = Store(config.storage.path)
    await store.open()
    try:
        return await store.dut_reports("R1")
    finally:
        await store.close()


async def import_text(config: StationConfig, text: str, dut: str | None) -> int:
    store = Store(config.storage.path)
    await store.open()
    try:
        return await import_csv(store, config, "R1", text.encode(), dut)
    finally:
        await store.close()


async def test_a_file_is_imported_with_the_duts_columns_and_time_zone(
    config: StationConfig
) -> None:
    await make_run(config)
    assert await import_text(config, LIDAR, "lidar1") == 4
    rows = await stored(config)
    assert [(r["t_ns"] - T0) / S for r in rows] == [40, 60, 75, 100]
    assert [r["rate_kg_h"] for r in rows] == pytest.approx([0.11, 0.09, 0.5, 0.2])
    assert {(r["dut_id"], r["run_id"], r["source"]) for r in rows} == {("lidar1", "R1",
                                                                        "import")}
    digest = hashlib.sha256(LIDAR.encode()).hexdigest()
    assert [r["import_key"] for r in rows] == [f"{digest}:{line}" for line in (2, 3, 6, 5)]
    assert rows[1]["raw"] == '2026-05-01T10:01:00Z,0.09,kg/h,"two\nlines"'
    assert rows[2]["raw"] == "2026-05-01 18:01:15,0.5,kg/h,between steps"


GENERIC = "dut_id,t,window_start,window_end,rate,unit\n"


def test_every_bad_row_is_named_with_its_line(config: StationConfig) -> None:
    text = (GENERIC
            + "pointnet,1777629640,,,0.1,kg/h\n"                  # 2: good
            + "pointnet,noon,,,0.1,kg/h\n"                         # 3: bad time
            + "pointnet,1777629640,,,\"1,5\",kg/h\n"               # 4: bad number
            + "pointnet,1777629640,,,0.1,kg/hr\n"                  # 5: unknown unit
            + "pointnet,,1777629700,1777629640,0.1,kg/h\n"         # 6: window reversed
            + "pointnet,1777629640,,,0.1\n"                        # 7: a cell short
            + "ny,2026-11-01 01:30:00,,,0.1,kg/h\n"                # 8: twice in New York
            + "\n"                                                 # blank: skipped
            + "point net,1777629640,,,0.1,kg/h\n"                  # 10: bad DUT id
            + "pointnet,,,,0.1,kg/h\n")                            # 11: no time
    with pytest.raises(ImportRefused) as caught:
        read_csv(text.encode(), None, config)
    problems = caught.value.problems
    assert [line for line, _ in problems] == [3, 4, 5, 6, 7, 8, 10, 11]
    expected = ["t: not an ISO 8601 time or epoch seconds (got 'noon')",
                "rate: Input should be a valid number (got '1,5')",
                "unit: unknown rate unit 'kg/hr'",
                "window_end: must be after window_start",
                "5 cells, the header has 6",
                "t: '2026-11-01 01:30:00' occurs twice or never in America/New_York",
                "dut_id: a DUT id is 1-64 letters",
                "give either `t` or `window_start` and `window_end`"]
    for (_, text_), words in zip(problems, expected, strict=True):
        assert words in text_


@pytest.mark.parametrize(("header", "dut", "missing"), [
    ("Timestamp,Q_unit\n", "lidar1", "missing column 'Q' (the report's `rate`)"),
    ("Q,Q_unit\n", "lidar1", "missing column 'Timestamp' (the report's `t`) (or "
                             "`window_start` and `window_end`)"),
    ("t,rate,unit\n", None, "missing column 'dut_id'"),
    ("dut_id,window_start,rate,unit\n", None, "missing column 'window_end'"),
    ("dut_id,t,rate,rate,unit\n", None, "column 'rate' appears more than once"),
])
def test_a_missing_column_is_named_before_any_row(config: StationConfig, header: str,
                                                  dut: str | None, missing: str) -> None:
    with pytest.raises(ImportRefused) as caught:
        read_csv((header + "x,1,2,3,4\n").encode(), dut, config)
    assert caught.value.problems == [(1, missing)]


@pytest.mark.parametrize(("text", "problem"), [
    ("", "the file is empty: no header row"),
    (GENERIC, "no reports: the file has a header row only"),
    ("\ufeffdut_id,t,rate,unit\nlidar2,1777629640,1,kg/h\n", "line 2: dut_id: 'lidar2' is not "
     "the DUT imported ('pointnet')"),
])
def test_empty_files_and_other_duts_are_refused(config: StationConfig, text: str,
                                                problem: str) -> None:
    with pytest.raises(ImportRefused, match=re.escape(problem)):
        read_csv(text.encode(), "pointnet", config)


async def test_a_bad_row_imports_nothing(config: StationConfig) -> None:
    await make_run(config)
    with pytest.raises(ImportRefused):
        await import_text(config, LIDAR + "2026-05-01 18:02:00,x,kg/h,\n", "lidar1")
    assert await stored(config) == []


async def test_a_file_imported_twice_is_refused(config: StationConfig) -> None:
    await make_run(config)
    await import_text(config, LIDAR, "lidar1")
    with pytest.raises(DuplicateImportError, match="4 of these 4 report"):
        await import_text(config, LIDAR, "lidar1")
    assert len(await stored(config)) == 4


async def test_a_run_that_is_not_in_the_store_is_refused(config: StationConfig) -> None:
    await make_run(config)
    store = Store(config.storage.path)
    await store.open()
    try:
        with pytest.raises(UnknownRunError, match=r"no run 'R2' in .* \(latest: R1\)"):
            await import_csv(store, config, "R2", LIDAR.encode(), "lidar1")
        assert await store.query("SELECT count(*) FROM dut_reports") == [(0,)]
    finally:
        await store.close()


@pytest.mark.parametrize(("table", "key", "words"), [
    ("wind_run_m = 100", "dut.x", "wind_run_m needs `wind_device`"),
    ('wind_run_m = 100\nwind_device = "nope"', "dut.x.wind_device", "no met device named 'nope'"),
    ('timezone = "Mars/Olympus"', "dut.x.timezone", "unknown time zone 'Mars/Olympus'"),
    ('columns = { rate_kg = "Q" }', "dut.x.columns", "unknown report field(s) rate_kg"),
    ('columns = { t = "Q", rate = "Q" }', "dut.x.columns", "a column header of its own"),
    ('columns = { t = "rate" }', "dut.x.columns", "a column header of its own"),
    ('columns = { t = " " }', "dut.x.columns", "a column header of its own"),
    ("min_overlap = 1.5", "dut.x.min_overlap", "less than or equal to 1"),
    ("reporting_delay_s = -1", "dut.x.reporting_delay_s", "greater than or equal to 0"),
])
def test_a_bad_dut_table_is_named(make_config: Callable[..., StationConfig], table: str,
                                  key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(extra=f"[dut.x]\n{table}\n")
    ((where, message),) = caught.value.problems
    assert where == key and words in message, caught.value.problems


def test_a_dut_id_that_cannot_name_a_topic_is_refused(
    make_config: Callable[..., StationConfig]
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(extra='[dut."lidar/1"]\n')
    assert caught.value.problems == [("dut.lidar/1", "a DUT id is 1-64 letters, digits, '_', "
                                                     "'.' or '-'")]


def crf(*args: str | Path) -> int:
    return main([str(arg) for arg in args])


def step_lines(out: str) -> dict[str, list[str]]:
    """Each step's row of `crf dut show` split in cells, by step number."""
    return {cells[0]: cells for line in out.splitlines()
            if (cells := line.split()) and cells[0].isdigit()}


def test_crf_dut_import_and_show(config: StationConfig, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(make_run(config))
    station, reports = tmp_path / "station.toml", tmp_path / "lidar.csv"
    reports.write_text(LIDAR)
    assert crf("dut", "import", "--config", station, "R1", reports, "--dut", "lidar1") == 0
    assert f"{reports}: 4 report(s) imported into run R1" in capsys.readouterr().out
    assert crf("dut", "import", "--config", station, "R1", reports, "--dut", "lidar1") == 1
    assert "was imported before, nothing imported" in capsys.readouterr().err

    assert crf("dut", "show", "--config", station, "R1") == 0
    out = capsys.readouterr().out
    steps = step_lines(out)
    assert steps["1"][6:8] == ["2", "0.1"]  # 40 s and 60 s: 0.11 and 0.09 kg/h
    assert steps["2"][6:8] == ["1", "0.2"]
    assert steps["3"][6:] == ["0", "-", "unstable,", "settle_timeout"]
    assert "unmatched" in out and "0.5 kg/h = 0.5 kg/h" in out  # 75 s: between the holds
    assert "matching ([dut.lidar1]): reporting_delay_s=0.0, min_overlap=0.5" in out

    # A corrected delay re-matches what is stored: holds at [40, 100] and [115, 175] s.
    station.write_text(station.read_text().replace("reporting_delay_s = 0",
                                                   "reporting_delay_s = 30"))
    assert crf("dut", "show", "--config", station, "R1", "--dut", "lidar1") == 0
    out = capsys.readouterr().out
    steps = step_lines(out)
    assert steps["1"][6:8] == ["4", "0.225"]
    assert steps["2"][6:] == ["0", "-", "no_reports"]
    assert "unmatched" not in out and "reporting_delay_s=30.0" in out


def test_crf_dut_show_applies_the_wind_run(config: StationConfig, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(make_run(config, wind_m_s=2.0))
    reports = tmp_path / "pointnet.csv"
    reports.write_text("dut_id,t,rate,unit,detected\npointnet,1777629640,0.3,kg/h,true\n"
                       "pointnet,1777629660,0,kg/h,false\n")
    assert crf("dut", "import", "--config", tmp_path / "station.toml", "R1", reports) == 0
    assert crf("dut", "show", "--config", tmp_path / "station.toml", "R1") == 0
    out = capsys.readouterr().out
    # At 40 s the wind has run 80 m since step 1 began; at 60 s, 120 m: only that counts.
    assert step_lines(out)["1"][6:] == ["1", "0", "not_detected:1"]
    assert "wind_run_short: step 1, 80 m by then" in out
    assert "wind_device=ws" in out and "61 wind_speed sample(s)" in out  # up to the last report


@pytest.mark.parametrize(("args", "code", "words"), [
    (("import", "R1", "lidar.csv", "--dut", "lidar1"), 0, ""),
    (("import", "R9", "lidar.csv", "--dut", "lidar1"), 1, "no run 'R9'"),
    (("import", "R1", "missing.csv"), 1, "cannot read"),
    (("import", "R1", "bad.csv", "--dut", "lidar1"), 1, "bad.csv:3: rate: Input should be"),
    (("show", "R9"), 1, "no run 'R9'"),
])
def test_crf_dut_exit_codes(config: StationConfig, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                            args: tuple[str, ...], code: int, words: str) -> None:
    asyncio.run(make_run(config))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lidar.csv").write_text(LIDAR)
    (tmp_path / "bad.csv").write_text(LIDAR.replace(",0.09,", ",0.09.1,"))
    command, *rest = args
    assert crf("dut", command, "--config", tmp_path / "station.toml", *rest) == code
    assert words in capsys.readouterr().err


def test_crf_dut_without_a_usable_config_or_store(tmp_path: Path, config: StationConfig,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert crf("dut", "show", "--config", tmp_path / "none.toml", "R1") == 2
    assert crf("dut", "show", "--config", tmp_path / "station.toml", "R1") == 1
    assert "no run store at" in capsys.readouterr().err
    assert not config.storage.path.exists()  # looking made no empty store
