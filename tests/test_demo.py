"""`crf demo` as a newcomer runs it: a real subprocess that starts a real broker, the
simulator and the daemon, runs a sequence over MQTT and writes the report; and stops all
of it, MFCs at zero, when it ends or is interrupted.

The end-to-end run forces the Python broker (amqtt, what a machine without mosquitto
gets); the interrupted one takes the default (mosquitto, installed where the tests run).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from acquisition.exit_codes import EXIT_CONFIG, EXIT_FAILED, EXIT_OK

REPO = Path(__file__).resolve().parents[1]
DEMO = [sys.executable, "-m", "acquisition.cli", "demo"]
QUICK_SEQUENCE = REPO / "config" / "sequences" / "demo-calibration-quick.toml"
SAFE = "MFCs at zero: the simulator holds setpoint 0 on "
PROGRESS = re.compile(r"step \d+/\d+  ")
# The progress line of a step that releases gas, holding: "step 2/5  P2  1.5 kg/h  [mfc_bh]
# holding 1/3 s ..." (a blank's target reads "0 kg/h").
RELEASING = re.compile(r"step \d+/\d+  \S+  (?!0 )[\d.]+ kg/h  \[\w+\]  holding")


def started(out: Path) -> dict[str, int]:
    """The demo's children, from the pid file it keeps: name -> pid."""
    rows = (out / "pids").read_text(encoding="utf-8").split("\n")
    return {name: int(pid) for name, pid in (row.split() for row in rows if row)}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def working_in(directory: Path) -> list[int]:
    """Processes whose working directory is inside `directory` (the demo runs every child
    there): found without the demo's word for it."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cwd = Path(os.readlink(proc / "cwd"))
        except (OSError, ValueError):
            continue
        if cwd == directory or directory in cwd.parents:
            found.append(int(proc.name))
    return found


def assert_nothing_left(out: Path, expected: set[str]) -> None:
    children = started(out)
    assert expected <= set(children), children
    assert not [name for name, pid in children.items() if alive(pid)]
    assert working_in(out.resolve()) == []


@pytest.mark.timeout(300)
def test_quick_blind_demo_ends_in_a_certificate_with_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    demo = subprocess.run([*DEMO, "--quick", "--blind", "--broker", "amqtt", "--out", str(out)],
                          capture_output=True, text=True, timeout=280)
    lines = demo.stdout.splitlines()
    assert demo.returncode == EXIT_OK, demo.stdout + demo.stderr
    assert "  broker    amqtt, " in demo.stdout
    progress = [line for line in lines if PROGRESS.search(line)]
    assert progress and all("(blind)" in line and "truth" not in line for line in progress)

    results = json.loads((out / "report" / "results.json").read_text(encoding="utf-8"))
    steps = tomllib.loads(QUICK_SEQUENCE.read_text(encoding="utf-8"))["steps"]
    rates = {(step["point"], step["rate"]): step.get("repeats", 1) for step in steps}
    holds = sum(rates.values())
    assert (f"run {results['run_id']} completed; the DUT reported {holds} of {holds} holds"
            in lines)
    points = {(point["point"], point["nominal"]): point for point in results["points"]}
    assert set(points) == {key for key in rates if key[1] > 0}
    certificate = subprocess.run(["pdftotext", "-layout", str(out / "report" /
                                                              "certificate.pdf"), "-"],
                                 capture_output=True, text=True, check=True).stdout
    for key, point in points.items():
        assert point["n_valid"] == rates[key], point  # every repeat has the DUT's report
        figures = [point["rate_error_pct"], point["rate_error_U_pct"],
                   point["rate_repeatability_pct"], point["loc_error_m"]]
        assert None not in figures, point
        for figure in figures:
            assert f"{figure:.2f}" in certificate, (figure, certificate)
    assert [blank["n_reports"] for blank in results["blanks"]] == [1]

    assert lines[-1].startswith(SAFE)
    assert_nothing_left(out, {"broker", "sim", "daemon", "ctl", "report"})


@pytest.mark.timeout(150)
async def test_ctrl_c_mid_release_stops_everything_with_the_mfcs_at_zero(
        tmp_path: Path) -> None:
    out = tmp_path / "demo"
    demo = await asyncio.create_subprocess_exec(
        *DEMO, "--quick", "--out", str(out), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    assert demo.stdout is not None
    seen = []
    async with asyncio.timeout(45):
        while not (seen and RELEASING.search(seen[-1])):
            line = (await demo.stdout.readline()).decode()
            assert line, f"the demo ended before a release: {''.join(seen)}"
            seen.append(line)
    demo.send_signal(signal.SIGINT)
    rest, _ = await asyncio.wait_for(demo.communicate(), 45)
    lines = rest.decode().splitlines()

    assert demo.returncode == EXIT_FAILED, "".join(seen) + rest.decode()
    assert "SIGINT" in rest.decode()
    assert lines[-1].startswith(SAFE)
    with sqlite3.connect(out / "store.sqlite") as store:
        assert store.execute("SELECT status FROM runs").fetchall() == [("aborted",)]
    assert not (out / "report").exists()
    assert_nothing_left(out, {"broker", "sim", "daemon", "ctl"})


def test_an_output_directory_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "earlier-run.txt").write_text("keep me", encoding="utf-8")
    demo = subprocess.run([*DEMO, "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=30)
    assert demo.returncode == EXIT_CONFIG
    assert demo.stderr.strip().splitlines() == [
        f"crf demo: --out {tmp_path}: exists and is not an empty directory"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["earlier-run.txt"]
