"""`crf report` on the session's calibrated run, as a subprocess: the five files, results.json
equal to the loader's results, the certificate's figures as Chromium renders the HTML and
as the PDF's text holds them, Chinese or English only, the steps' calibration conditions
against the station's limits, and the errors a user makes."""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from acquisition.config.station import ConfigError, load_config
from acquisition.config.tables import ConditionLimits, ConditionRange
from acquisition.report.conditions import (
    Direction,
    Stat,
    check,
    covering_arc,
    direction_sums,
    in_sector,
    step_conditions,
)
from acquisition.report.formatting import kg_h, metres, percent, plus_minus, significant
from acquisition.report.labels import Labels
from acquisition.results.loader import load_calibration
from acquisition.store.store import Store
from tests.calibrated import PRESSURE_HPA, TEMPERATURE_C, WIND_FROM_DEG, WIND_M_S, CalibratedRun
from tests.stations import write_station

FILES = ("results.json", "record.html", "record.pdf", "certificate.html", "certificate.pdf")
CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")
# The results.json contract (acquisition/results/calibration.py).
POINT_KEYS = {"point", "nominal", "unit", "n", "n_valid", "truth_kg_h", "dut_kg_h",
              "rate_error_pct", "rate_error_U_pct", "rate_repeatability_pct", "loc_error_m",
              "loc_error_mean_m", "loc_error_U_m", "loc_repeatability_m", "flags", "repeats"}
REPEAT_KEYS = {"step", "truth_kg_h", "u_truth_kg_h", "dut_kg_h", "n_reports", "lat", "lon",
               "loc_error_m"}


def crf_report(*args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "acquisition.cli", "report", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stdout, stderr


def station_copy(run: CalibratedRun, folder: Path, replace: dict[str, str]) -> Path:
    """The calibrated run's station file with some text replaced, written into `folder`."""
    text = run.config_path.read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = folder / "station.toml"
    path.write_text(text)
    return path


@dataclass(frozen=True)
class Reports:
    both: Path  # the fixture's station: every step within its limits
    english: Path  # --lang en, with a temperature limit every step breaks
    stdout: str


@pytest.fixture(scope="module")
def reports(calibrated_run: CalibratedRun, tmp_path_factory: pytest.TempPathFactory) -> Reports:
    """The report made twice at once: both languages, and English with a cold limit."""
    folder = tmp_path_factory.mktemp("report")
    too_warm = station_copy(calibrated_run, folder, {
        "temperature_c = { min = -10, max = 40 }":
        f"temperature_c = {{ min = -10, max = {TEMPERATURE_C - 1} }}"})
    both = crf_report(calibrated_run.run_id, "--config", calibrated_run.config_path,
                      "--out", folder / "both")
    english = crf_report(calibrated_run.run_id, "--config", too_warm, "--out",
                         folder / "en", "--lang", "en")
    (code, stdout, stderr), (en_code, _, en_stderr) = finished(both), finished(english)
    assert code == 0, stderr
    assert en_code == 0, en_stderr
    return Reports(folder / "both", folder / "en", stdout)


async def _calibration_results(run: CalibratedRun) -> dict:
    store = Store(run.config.storage.path)
    await store.open()
    try:
        return (await load_calibration(store, run.config, run.run_id)).results
    finally:
        await store.close()


def pdf_text(path: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True,
                          capture_output=True, text=True, timeout=60).stdout


def certificate_figures(results: dict) -> list[str]:
    """Every point's figures as the certificate's template writes them."""
    figures = []
    for point in results["points"]:
        figures += [plus_minus(percent(point["rate_error_pct"]),
                               percent(point["rate_error_U_pct"])),
                    percent(point["rate_repeatability_pct"]),
                    plus_minus(metres(point["loc_error_m"]), metres(point["loc_error_U_m"])),
                    metres(point["loc_repeatability_m"]), kg_h(point["truth_kg_h"])]
    return figures


def test_report_writes_five_files_and_results_json_is_the_calibration(
        reports: Reports, calibrated_run: CalibratedRun) -> None:
    assert reports.stdout.split() == [str(reports.both / name) for name in FILES]
    assert sorted(path.name for path in reports.both.iterdir()) == sorted(FILES)  # no .part
    results = json.loads((reports.both / "results.json").read_text(encoding="utf-8"))
    assert results == asyncio.run(_calibration_results(calibrated_run))
    assert set(results) == {"run_id", "software", "formulas", "points", "blanks", "parity"}
    assert len(results["points"]) == 2 and len(results["blanks"]) == 1
    for point in results["points"]:
        assert set(point) == POINT_KEYS
        assert all(set(repeat) == REPEAT_KEYS for repeat in point["repeats"])
        assert point["rate_error_pct"] is not None and point["loc_error_m"] is not None
    assert set(results["parity"]) == {"slope", "intercept", "r2", "slope_origin", "n"}


def test_chromium_renders_the_certificates_results(reports: Reports, tmp_path: Path) -> None:
    dom = subprocess.run(
        [shutil.which("chromium") or "/usr/bin/chromium", "--headless", "--no-sandbox",
         "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}",
         "--dump-dom", (reports.both / "certificate.html").as_uri()],
        check=True, capture_output=True, text=True, timeout=60).stdout
    results = json.loads((reports.both / "results.json").read_text(encoding="utf-8"))
    assert "<svg" in dom  # the parity and localization plots are inline
    for figure in certificate_figures(results):
        assert figure in dom


def test_certificate_pdf_has_the_figures_and_chinese_labels(reports: Reports) -> None:
    text = pdf_text(reports.both / "certificate.pdf")
    results = json.loads((reports.both / "results.json").read_text(encoding="utf-8"))
    for figure in certificate_figures(results):
        assert figure in text
    for label in ("示值误差", "重复性", "indication error", "校准条件",
                  "全部步骤均在规定的校准条件内", "建议复校时间间隔不超过 6 个月",
                  "可控气体释放装置 Controlled Release Facility", "Test Metrology Lab"):
        assert label in text, label
    assert "第 1 页 共 2 页 page 1 of 2" in text


def test_english_only_certificate_flags_the_steps_outside_its_limits(reports: Reports) -> None:
    text = pdf_text(reports.english / "certificate.pdf")
    assert not CJK.findall(text)
    assert "Recommended re-calibration interval: not more than 6 months" in text
    assert "Calibration results" in text and "Calibration conditions" in text
    html = (reports.english / "certificate.html").read_text(encoding="utf-8")
    assert not CJK.findall(html)
    outside = re.search(r"Steps outside the limits:(.*?)</p>", html, re.S)
    assert outside is not None
    flagged = re.findall(r"Step (\d+) \(temperature\)", outside.group(1))
    assert flagged == [str(n) for n in range(1, 6)]  # every step was warmer than allowed


def test_record_pdf_has_every_step_and_its_budget(reports: Reports,
                                                  calibrated_run: CalibratedRun) -> None:
    text = pdf_text(reports.both / "record.pdf")
    rows = sqlite3.connect(calibrated_run.config.storage.path).execute(
        "SELECT idx, truth_mean, u_expanded, budget_json FROM steps WHERE run_id = ?"
        " ORDER BY idx", (calibrated_run.run_id,)).fetchall()
    assert len(rows) == 5
    assert "标准值不确定度分量 Uncertainty budget of the truth" in text
    for _, truth, u_expanded, budget_json in rows:
        assert kg_h(truth) in text
        assert significant(u_expanded) in text
        for item in json.loads(budget_json)["budget"]:
            assert significant(item["u_kg_h"]) in text
    assert "读数平均值 readback mean" in text
    assert calibrated_run.run_id in text


async def test_step_conditions_are_the_simulated_weather(calibrated_run: CalibratedRun) -> None:
    """The weather station's samples over each hold: temperature and pressure as simulated
    (pressure from hPa to kPa), wind near its mean, direction from the west-south-west."""
    store = Store(calibrated_run.config.storage.path)
    await store.open()
    try:
        calibration = await load_calibration(store, calibrated_run.config, calibrated_run.run_id)
        conditions = await step_conditions(store, calibrated_run.config, calibrated_run.run_id,
                                           calibration.steps)
        channel = (await store.query("SELECT id FROM channels WHERE device = 'ws1' AND"
                                     " channel = 'wind_direction'"))[0][0]
        in_sql = await direction_sums(store, calibrated_run.run_id, channel, True)
        streamed = await direction_sums(store, calibrated_run.run_id, channel, False)
    finally:
        await store.close()
    assert [item.step for item in conditions] == [step["idx"] for step in calibration.steps]
    for item in conditions:
        assert item.outside == ()
        assert item.stats["temperature_c"].mean == pytest.approx(TEMPERATURE_C, abs=0.05)
        assert item.stats["pressure_kpa"].mean == pytest.approx(PRESSURE_HPA / 10, abs=0.01)
        assert item.stats["wind_speed_m_s"].n >= 2
        assert abs(item.stats["wind_speed_m_s"].mean - WIND_M_S) < 1.5
        assert item.direction is not None
        assert abs((item.direction.mean_deg - WIND_FROM_DEG + 180) % 360 - 180) < 20
    assert set(in_sql) == set(streamed) == {item.step for item in conditions}
    for idx, direction in in_sql.items():
        assert direction.n == streamed[idx].n
        assert direction.mean_deg == pytest.approx(streamed[idx].mean_deg, abs=1e-9)


LIMITS = ConditionLimits(temperature_c=ConditionRange(min=0, max=30),
                         wind_speed_m_s=ConditionRange(max=8), wind_sector_deg=(300, 60))


@pytest.mark.parametrize(("temperature", "wind", "direction", "broken"), [
    ((5, 10, 25), (1, 2, 3), 350.0, ()),
    ((-1, 10, 25), (1, 2, 3), 10.0, ("temperature_c",)),  # one sample below the minimum
    ((5, 10, 31), (1, 2, 9), 0.0, ("temperature_c", "wind_speed_m_s")),
    ((5, 10, 25), (1, 2, 3), 180.0, ("wind_sector_deg",)),  # outside a sector across north
    (None, (1, 2, 3), None, ("temperature_c", "wind_sector_deg")),  # limited, not measured
])
def test_check_against_limits(temperature: tuple[float, float, float] | None,
                              wind: tuple[float, float, float], direction: float | None,
                              broken: tuple[str, ...]) -> None:
    stats = {"wind_speed_m_s": Stat(10, *wind)}
    if temperature is not None:
        stats["temperature_c"] = Stat(10, *temperature)
    unit = (None if direction is None else
            Direction(1, math.sin(math.radians(direction)), math.cos(math.radians(direction))))
    assert check(stats, unit, LIMITS) == broken


def test_sectors_and_arcs_across_north() -> None:
    assert in_sector(350, (300, 60)) and in_sector(0, (300, 60)) and in_sector(60, (300, 60))
    assert not in_sector(61, (300, 60)) and not in_sector(180, (300, 60))
    assert in_sector(123, (0, 360))
    assert covering_arc([350, 10, 5]) == (350, 10)
    assert covering_arc([90, 100, 95]) == (90, 100)
    assert covering_arc([42]) == (42, 42)
    assert covering_arc([]) is None


def _two_dut_store(run: CalibratedRun, folder: Path) -> Path:
    """A copy of the run's store where a second DUT reported too; its station file."""
    copy = folder / "two_duts.sqlite"
    with sqlite3.connect(run.config.storage.path) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    with sqlite3.connect(copy) as db:
        db.execute("INSERT INTO dut_reports (run_id, dut_id, source, received_ns, t_ns, rate,"
                   " unit, rate_kg_h, detected, raw) SELECT run_id, 'd2', source, received_ns,"
                   " t_ns, rate, unit, rate_kg_h, detected, raw FROM dut_reports LIMIT 1")
    return station_copy(run, folder, {str(run.config.storage.path): str(copy)})


@pytest.mark.parametrize(("case", "expected"), [
    ("unknown_run", "crf report: no run 'nope'"),
    ("no_store", "crf report: no run store at"),
    ("two_duts", "has reports of 2 DUTs (d1, d2): name one with --dut"),
    ("misspelt_dut", "crf report: DUT 'dl' sent no report in run"),
    ("out_is_a_file", "crf report: cannot write"),
])
def test_user_errors_are_one_line_and_exit_1(case: str, expected: str, tmp_path: Path,
                                             calibrated_run: CalibratedRun) -> None:
    config, run_id, extra = calibrated_run.config_path, calibrated_run.run_id, []
    out = tmp_path / "out"
    if case == "unknown_run":
        run_id = "nope"
    elif case == "no_store":
        config = station_copy(calibrated_run, tmp_path, {
            str(calibrated_run.config.storage.path): str(tmp_path / "missing.sqlite")})
    elif case == "two_duts":
        config = _two_dut_store(calibrated_run, tmp_path)
    elif case == "misspelt_dut":
        extra = ["--dut", "dl"]
    else:
        out.write_text("a file, not a folder")
    code, stdout, stderr = finished(crf_report(run_id, "--config", config, "--out", out,
                                               *extra))
    assert code == 1
    assert stdout == ""
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert expected in stderr and "Traceback" not in stderr


def test_flags_are_gathered_by_name_with_steps_numbered_from_one() -> None:
    flags = ["too_few_repeats", "missed_detection:0", "unstable:1", "missed_detection:2"]
    assert Labels("en").flags(flags) == ["too few valid repeats", "missed detection (Step 1, 3)",
                                         "unstable (Step 2)"]
    assert Labels("zh").flags(["not_detected:4"]) == ["报告未检出 (步骤 5)"]
    assert Labels().flags(["some_new_flag"]) == ["some_new_flag"]  # unknown: as it is


@pytest.mark.parametrize(("table", "problem"), [
    ('[certificate.conditions]\ndevice = "ws9"',
     "certificate.conditions.device: no met device named 'ws9'"),
    ("[certificate.conditions]\ntemperature_c = { min = 30, max = 10 }",
     "certificate.conditions.temperature_c: min 30.0 is above max 10.0"),
    ("[certificate.conditions]\nwind_sector_deg = [180, 400]",
     "certificate.conditions.wind_sector_deg: both ends of the sector"),
    ("[certificate]\nrecalibration_interval_month = 6",
     "certificate.recalibration_interval_month: unknown key"),
])
def test_certificate_table_errors_name_the_key(table: str, problem: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(write_station(tmp_path, extra=table))
    assert problem in str(error.value)
