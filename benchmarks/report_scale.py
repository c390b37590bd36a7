"""A long test day must not break the report: wall time and peak memory of `crf report` and
`crf runs export` on a synthetic 24-hour run store.

The store (synthetic_store.py) holds one completed run of 24 h: 200 steps (blanks and
four rates at each of two release points, 20 repeats of each, shuffled), each with its
truth and uncertainty budget; about 20 million samples (4 MFCs polled at 10 Hz, a
methane analyzer at 10 Hz, GNSS at 5 Hz, a weather station at 1 Hz, a few MFC faults
among them); 400 DUT window reports, some of them misses; P1's GNSS survey every minute;
the run's events and outbox. Its station file (`station.toml`, beside the store) is
what both commands load with `--config`.

The store is built once per set of parameters (and version of the generator) under
`--workdir` and reused; `--rebuild` builds it again. Then each command runs as a child
process into a fresh output directory, and its wall time and peak resident memory
(`ru_maxrss` of `wait4`: the child, or its largest waited-for descendant) are printed
against the targets on a 2-core machine:

    crf report        under 30 s, peak RSS under 500 MB
    crf runs export   under 60 s, peak RSS under 500 MB

    python benchmarks/report_scale.py [--hours 24] [--workdir DIR] [--rebuild] [--build-only]

`--hours 0.05` builds a 3-minute day (the same 200 steps, 45,000 samples) in seconds.
Missing a target is a figure, not a failure; the exit code is 1 only when a command
failed (0 with `--build-only`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from synthetic_store import BuildFigures, build_store

from acquisition.exit_codes import EXIT_FAILED, EXIT_OK

SEED = 2026
GENERATOR = ("synthetic_day.py", "synthetic_signals.py", "synthetic_store.py")
MB = 1e6
COMMAND_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Command:
    label: str
    name: str  # of its output directory
    argv: list[str]  # after `crf`
    target_s: float
    target_rss_mb: float = 500.0


@dataclass(frozen=True)
class Outcome:
    command: Command
    exit_code: int
    seconds: float
    peak_rss_mb: float
    output_files: int
    output_bytes: int
    stderr: str


def store_folder(workdir: Path, hours: float) -> Path:
    """Where the day of these parameters is kept: a change of the generator is a new day."""
    digest = hashlib.sha256(json.dumps({"hours": hours, "seed": SEED}).encode())
    for name in GENERATOR:
        digest.update(Path(__file__).with_name(name).read_bytes())
    return workdir / f"day-{hours:g}h-{digest.hexdigest()[:12]}"


def built_store(folder: Path, rebuild: bool, hours: float) -> tuple[BuildFigures, bool]:
    """The figures of the store in `folder`, built now unless a finished one is there;
    whether it was cached. `build.json` is written last: its presence means finished."""
    record = folder / "build.json"
    if record.exists() and not rebuild:
        return BuildFigures(**json.loads(record.read_text())), True
    for stale in folder.parent.glob(f"day-{hours:g}h-*"):  # an older generator's: gigabytes
        shutil.rmtree(stale, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"building a {hours:g}-hour day in {folder} ...", flush=True)
    figures = build_store(folder, hours, SEED)
    record.write_text(json.dumps(figures.to_dict(), indent=2))
    return figures, False


def print_build(folder: Path, figures: BuildFigures, cached: bool) -> None:
    rows = figures.rows
    how = "cached, built" if cached else "built"
    print(f"\nstore {folder / 'store.sqlite'}: {figures.bytes / MB:,.0f} MB, {how} in "
          f"{figures.seconds:.0f} s ({rows['samples'] / figures.seconds:,.0f} samples/s)")
    print("rows: " + ", ".join(f"{table} {count:,}" for table, count in rows.items()))
    print(f"run {figures.run_id}\n")


def measure(command: Command, out: Path) -> Outcome:
    """Run `crf <argv> --out out` as a child; its exit code, wall time and peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    stderr_path = out.with_name(out.name + ".stderr")
    with open(out.with_name(out.name + ".stdout"), "wb") as stdout, \
            open(stderr_path, "wb") as stderr:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "acquisition.cli", *command.argv,
                                  "--out", str(out)], stdout=stdout, stderr=stderr)
        watchdog = threading.Timer(COMMAND_TIMEOUT_S, child.kill)
        watchdog.start()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        watchdog.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    files = [path for path in out.rglob("*") if path.is_file()]
    return Outcome(command, child.returncode, seconds, usage.ru_maxrss * 1024 / MB,
                   len(files), sum(path.stat().st_size for path in files),
                   stderr_path.read_text(errors="replace"))


def print_outcomes(outcomes: list[Outcome]) -> None:
    print(f"\n{'command':<16} {'exit':>4} {'wall s':>7} {'target':<10} {'peak RSS MB':>11} "
          f"{'target':<12} output")
    for o in outcomes:
        wall = f"< {o.command.target_s:g} " + ("ok" if o.seconds < o.command.target_s
                                               else "OVER")
        rss = f"< {o.command.target_rss_mb:g} " + ("ok" if o.peak_rss_mb
                                                   < o.command.target_rss_mb else "OVER")
        print(f"{o.command.label:<16} {o.exit_code:>4} {o.seconds:>7.1f} {wall:<10} "
              f"{o.peak_rss_mb:>11.0f} {rss:<12} {o.output_files} files, "
              f"{o.output_bytes / MB:,.1f} MB")
    for o in outcomes:
        if o.exit_code != 0:
            print(f"\n--- {o.command.label}: exit {o.exit_code}, stderr:\n{o.stderr.rstrip()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0,
                        help="length of the synthetic day (default 24)")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "crf-report-scale",
                        help="where built stores are kept and reused, with the outputs")
    parser.add_argument("--rebuild", action="store_true", help="build the store again")
    parser.add_argument("--build-only", action="store_true",
                        help="build (or find) the store, run no command")
    args = parser.parse_args()
    if not 0 < args.hours <= 240:
        parser.error(f"--hours {args.hours:g}: give a length between 0 and 240 hours")
    folder = store_folder(args.workdir.resolve(), args.hours)
    figures, cached = built_store(folder, args.rebuild, args.hours)
    print_build(folder, figures, cached)
    if args.build_only:
        return EXIT_OK
    config = ["--config", str(folder / "station.toml")]
    commands = [Command("crf report", "report", ["report", figures.run_id, *config], 30.0),
                Command("crf runs export", "export",
                        ["runs", "export", figures.run_id, *config], 60.0)]
    outcomes = []
    for command in commands:
        print(f"running {command.label} ...", flush=True)
        outcomes.append(measure(command, folder / "out" / command.name))
    print_outcomes(outcomes)
    return EXIT_OK if all(o.exit_code == 0 for o in outcomes) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
