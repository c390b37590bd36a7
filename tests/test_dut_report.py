"""DUT reports: the schema a live report and a CSV row share, and their rows in the store
(schema version 2, which a version-1 store gains when it is opened)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from acquisition.config.tables import DUT_REPORT_FIELDS
from acquisition.dut.report import (
    MAX_REPORT_BYTES,
    ReportError,
    ReportPayload,
    report_row,
    validate_report,
)
from acquisition.store.store import (
    DUT_REPORT_COLUMNS,
    SCHEMA_VERSION,
    DuplicateImportError,
    Store,
    StoreError,
)

T0_NS = 1_777_629_600 * 10**9  # 2026-05-01T10:00:00Z


def report(payload: str | bytes, topic_dut: str = "lidar1"):  # type: ignore[no-untyped-def]
    return validate_report(payload, topic_dut, "CH4")


def test_the_fields_are_the_default_csv_columns() -> None:
    assert tuple(ReportPayload.model_fields) == DUT_REPORT_FIELDS


@pytest.mark.parametrize(("payload", "t_ns"), [
    ('{"t": "2026-05-01T10:00:00Z", "rate": 1, "unit": "kg/h"}', T0_NS),
    ('{"t": "2026-05-01T18:00:00+08:00", "rate": 1, "unit": "kg/h"}', T0_NS),
    ('{"t": 1777629600, "rate": 1, "unit": "kg/h"}', T0_NS),
    ('{"t": 1777629600.25, "rate": 1, "unit": "kg/h"}', T0_NS + 250_000_000),
], ids=["iso-z", "iso-offset", "epoch", "epoch-fraction"])
def test_a_time_with_offset_or_epoch_seconds_is_utc_ns(payload: str, t_ns: int) -> None:
    got = report(payload)
    assert (got.t_ns, got.window_start_ns, got.window_end_ns) == (t_ns, None, None)
    assert got.dut_id == "lidar1" and got.detected is True


def test_a_window_report_is_timed_at_its_middle() -> None:
    got = report('{"window_start": "2026-05-01T10:00:00Z", "window_end": 1777629660,'
                 ' "rate": 0, "unit": "g/h", "detected": false, "dut_id": "lidar1"}')
    assert (got.window_start_ns, got.window_end_ns) == (T0_NS, T0_NS + 60 * 10**9)
    assert got.t_ns == T0_NS + 30 * 10**9
    assert got.detected is False


@pytest.mark.parametrize(("rate", "unit", "kg_h"), [
    (500.0, "g/h", 0.5), (2.0, "g/s", 7.2), (24.0, "kg/d", 1.0),
    (23.23, "SLPM", 1.0),  # CH4 at 0 degC: 1 kg/h = 23.23 SLPM
])
def test_the_rate_is_converted_to_kg_h_of_the_species(rate: float, unit: str,
                                                      kg_h: float) -> None:
    got = report(f'{{"t": 1777629600, "rate": {rate}, "unit": "{unit}", "u_rate": 1,'
                 ' "lat": 34.75, "lon": 113.63}')
    assert got.rate_kg_h == pytest.approx(kg_h, rel=1e-3)
    assert (got.rate, got.unit, got.u_rate, got.lat, got.lon) == (rate, unit, 1, 34.75, 113.63)


OK = '"t": 1777629600, "rate": 1, "unit": "kg/h"'


@pytest.mark.parametrize(("payload", "code", "words"), [
    ('{"t": "2026-05-01T10:00:00", "rate": 1, "unit": "kg/h"}', "bad_report",
     "t: an ISO 8601 time needs its UTC offset"),
    ('{"t": "yesterday", "rate": 1, "unit": "kg/h"}', "bad_report",
     "t: not an ISO 8601 time or epoch seconds (got 'yesterday')"),
    ('{"t": 1777629600000, "rate": 1, "unit": "kg/h"}', "bad_report",
     "t: epoch seconds must fall between 2000 and 2100 (milliseconds?)"),
    ('{"window_start": 1777629660, "window_end": 1777629600, "rate": 1, "unit": "kg/h"}',
     "bad_report", "window_end: must be after window_start"),
    ('{"window_start": 1777629600, "rate": 1, "unit": "kg/h"}', "bad_report",
     "window_end: a window needs both"),
    ('{"t": 1777629600, "window_end": 1777629660, "rate": 1, "unit": "kg/h"}', "bad_report",
     "give either `t` or `window_start` and `window_end`"),
    ('{"rate": 1, "unit": "kg/h"}', "bad_report", "give either `t`"),
    (f'{{{OK}, "lat": 34.7}}', "bad_report", "lon: give both `lat` and `lon`, or neither"),
    (f'{{{OK}, "lat": 91, "lon": 0}}', "bad_report", "lat: Input should be less than or equal"),
    ('{"t": 1777629600, "rate": -0.1, "unit": "kg/h"}', "bad_report",
     "rate: Input should be greater than or equal to 0"),
    ('{"t": 1777629600, "rate": "1.5", "unit": "kg/h"}', "bad_report",
     "rate: Input should be a valid number (got '1.5')"),
    ('{"t": 1777629600, "unit": "kg/h"}', "bad_report", "rate: Field required"),
    ('{"t": 1777629600, "rate": 1, "unit": "kg/hr"}', "unknown_unit",
     "unit: unknown rate unit 'kg/hr' (use one of kg/h,"),
    (f'{{{OK}, "confidence": 0.9}}', "bad_report", "confidence: unknown field (fields: dut_id"),
    (f'{{{OK}, "detected": "no"}}', "bad_report", "detected: Input should be a valid boolean"),
    (f'{{{OK}, "dut_id": "lidar2"}}', "bad_report",
     "dut_id: 'lidar2' is not the DUT of the topic ('lidar1')"),
    ('{"t": 1777629600, "rate": NaN, "unit": "kg/h"}', "not_finite", "rate: NaN"),
    ('{"t": 1777629600, "rate": 1e999, "unit": "kg/h"}', "not_finite", "rate: Infinity"),
    ('[1, 2]', "bad_report", "a report is a JSON object"),
    ('{"t": ', "bad_json", "payload is not JSON"),
    (b'{"unit": "\xff"}', "bad_json", "not UTF-8"),
    ('{"a": [[[[[]]]]]}', "too_deep", "nested more than 4 levels"),
    ('{"raw": "' + "x" * MAX_REPORT_BYTES + '"}', "too_large",
     f"a report has at most {MAX_REPORT_BYTES}"),
], ids=["naive-iso", "bad-time", "epoch-ms", "window-reversed", "window-half", "t-and-window",
        "no-time", "lat-only", "lat-range", "negative-rate", "string-number", "no-rate",
        "unknown-unit", "unknown-field", "detected-text", "other-dut", "nan", "1e999",
        "array", "not-json", "not-utf8", "deep", "large"])
def test_a_bad_report_is_refused_with_a_code_naming_the_field(payload: str | bytes, code: str,
                                                              words: str) -> None:
    with pytest.raises(ReportError) as caught:
        report(payload)
    assert caught.value.code == code, caught.value.message
    assert words in caught.value.message, caught.value.message


def test_every_problem_of_a_report_is_named_at_once() -> None:
    with pytest.raises(ReportError) as caught:
        report('{"t": "noon", "rate": -1, "unit": "lb/h"}')
    assert caught.value.code == "unknown_unit"  # the code a sender can act on
    for field in ("t:", "rate:", "unit:"):
        assert field in caught.value.message


def test_a_bad_dut_id_from_the_topic_is_refused() -> None:
    with pytest.raises(ReportError, match="dut_id: a DUT id is 1-64 letters"):
        report(f"{{{OK}}}", topic_dut="lidar 1")


def test_the_row_has_every_column_but_the_id_and_import_key() -> None:
    payload = b'{"t": 1777629600, "rate": 2, "unit": "g/s", "detected": false}'
    row = report_row(report(payload), None, 123, "mqtt", payload)
    assert set(row) == set(DUT_REPORT_COLUMNS) - {"id", "import_key"}
    assert row["raw"] == payload.decode() and row["detected"] == 0
    assert row["rate_kg_h"] == pytest.approx(7.2) and row["received_ns"] == 123


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = Store(tmp_path / "store.sqlite")
    await store.open()
    yield store
    await store.close()


def row(t_s: int, key: str | None = None) -> dict[str, object]:
    got = report(f'{{"t": {1777629600 + t_s}, "rate": 1, "unit": "kg/h"}}')
    return report_row(got, None, 0, "import" if key else "mqtt", "raw") | (
        {"import_key": key} if key else {})


async def test_reports_are_stored_and_read_back_in_time_order(store: Store) -> None:
    await store.add_dut_report(row(60))
    assert await store.add_dut_reports([row(0, "f:2"), row(30, "f:3")]) == 2
    got = await store.dut_reports(None)
    assert [r["t_ns"] - T0_NS for r in got] == [0, 30 * 10**9, 60 * 10**9]
    assert [r["import_key"] for r in got] == ["f:2", "f:3", None]
    assert [r["source"] for r in got] == ["import", "import", "mqtt"]


async def test_a_batch_with_a_key_already_stored_writes_nothing(store: Store) -> None:
    await store.add_dut_reports([row(0, "f:2")])
    with pytest.raises(DuplicateImportError, match=r"1 of these 2 report\(s\) were imported "
                                                   r"before \(import key f:2\): nothing"):
        await store.add_dut_reports([row(10, "f:9"), row(0, "f:2")])
    assert [r["import_key"] for r in await store.dut_reports(None)] == ["f:2"]
    await store.add_dut_report(row(20))  # the store is usable after the refusal
    assert len(await store.dut_reports(None)) == 2


async def test_a_row_with_an_unknown_column_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="no dut_reports column"):
        await store.add_dut_report(row(0) | {"confidence": 0.9})


# The run store as schema version 1 left it (the tables a DUT import touches).
VERSION_1 = """
CREATE TABLE runs (id TEXT PRIMARY KEY, station TEXT NOT NULL, sequence_name TEXT,
    sequence_json TEXT, sequence_hash TEXT, config_hash TEXT NOT NULL, operator TEXT,
    dut TEXT, software TEXT NOT NULL, inventory_json TEXT, positions_json TEXT,
    clock_offset_s REAL, t_start_ns INTEGER NOT NULL, t_end_ns INTEGER,
    status TEXT NOT NULL, reason TEXT);
CREATE TABLE events (id INTEGER PRIMARY KEY, run_id TEXT REFERENCES runs(id),
    t_ns INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '{}');
INSERT INTO runs (id, station, config_hash, software, t_start_ns, status)
    VALUES ('r1', 'old', 'abc', '0.1', 1, 'completed');
PRAGMA user_version = 1;
"""


async def test_a_version_1_store_opens_and_gains_the_reports_table(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(VERSION_1)
    store = Store(path)
    await store.open()
    try:
        await store.add_dut_report(row(0) | {"run_id": "r1"})
        assert [r["run_id"] for r in await store.dut_reports("r1")] == ["r1"]
        assert await store.query("SELECT id, station FROM runs") == [("r1", "old")]
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_a_newer_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = Store(path)
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, this crf-daq "
                                         f"reads {SCHEMA_VERSION}"):
        await store.open()
    await store.close()
