"""`crf runs`: the runs in the store (`list`), one run with its steps (`show`), and one run
exported as CSV and Parquet files for analysis (`export`). None of them writes the store.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from acquisition.cli.common import dut_id, with_store
from acquisition.config.station import StationConfig
from acquisition.exit_codes import EXIT_FAILED, EXIT_OK
from acquisition.export.tables import EVENTS
from acquisition.run.state import FINAL

if TYPE_CHECKING:  # the store and pyarrow are imported when a command runs
    from acquisition.store.store import Store

DEFAULT_LIMIT = 20
STATUSES = ("running", *sorted(FINAL))  # the values of runs.status
EXPORT_EPILOG = f"""\
DIR gets samples, steps, events, dut_reports and point_positions, each as .csv and
.parquet; results.json (the results of the DUT that reported, of --dut, or, when several
DUTs reported and none is named, results-<dut>.json for each); and run.json, written last:
the run, the export, each table's row count, columns (dtype, unit) and read_csv call.
Files are written as <name>.part and renamed when complete.

Read a table with pandas: pd.read_parquet('events.parquet'), or exactly as run.json's
tables.<name>.read_csv says, e.g.:
  {EVENTS.read_csv('events.csv')}
"""


def cmd_list(args: argparse.Namespace) -> int:
    from acquisition.export.listing import list_json, list_runs, render_list

    async def work(config: StationConfig, store: Store) -> int:
        runs, total = await list_runs(store, args.limit or None, args.status)
        if not runs:
            which = f" with status {args.status}" if args.status else ""
            print(f"crf runs list: no runs{which} in {store.path}", file=sys.stderr)
        elif args.json:
            for run in runs:
                print(list_json(run))
        else:
            render_list(runs, sys.stdout)
        if total > len(runs):
            print(f"{total - len(runs)} older run(s) not shown (--limit 0 shows all)",
                  file=sys.stderr)
        return EXIT_OK

    return with_store("crf runs list", args.config, work)


def cmd_show(args: argparse.Namespace) -> int:
    from acquisition.export.listing import render_show, run_summary

    async def work(config: StationConfig, store: Store) -> int:
        render_show(await run_summary(store, args.run_id), sys.stdout)
        return EXIT_OK

    return with_store("crf runs show", args.config, work)


def cmd_export(args: argparse.Namespace) -> int:
    from acquisition.export.bundle import ExportError, export_run

    async def work(config: StationConfig, store: Store) -> int:
        try:
            exported = await export_run(store, config, args.run_id, Path(args.out), args.dut,
                                        args.force)
        except ExportError as error:
            print(f"crf runs export: {error}", file=sys.stderr)
            return EXIT_FAILED
        except OSError as error:
            print(f"crf runs export: cannot write {error.filename or args.out}: "
                  f"{error.strerror or error}", file=sys.stderr)
            return EXIT_FAILED
        rows = ", ".join(f"{name} {count}" for name, count in exported.rows.items())
        results = ", ".join(f"{name} (DUT {dut or 'none reported'})"
                            for name, dut in exported.results.items())
        print(f"{exported.out}: run {args.run_id}: {rows} row(s); {results}; run.json")
        return EXIT_OK

    return with_store("crf runs export", args.config, work)


def _limit(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"'{value}': a number of runs, 0 for all")
    return int(value)


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    runs = commands.add_parser("runs", help="the runs in the store: list, show, export")
    actions = runs.add_subparsers(dest="runs_command", metavar="COMMAND", required=True)

    listing = actions.add_parser(
        "list", help="one line per run, newest first: id, status, sequence, DUT, the DUTs "
        "that reported, start (UTC), duration, steps")
    listing.add_argument("--config", required=True, help="station TOML file")
    listing.add_argument("--limit", type=_limit, default=DEFAULT_LIMIT, metavar="N",
                         help=f"the newest N runs (default {DEFAULT_LIMIT}; 0: all)")
    listing.add_argument("--status", choices=STATUSES, help="only runs of this status")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=cmd_list)

    show = actions.add_parser(
        "show", help="one run: status, sequence, operator, DUT, software, times, clock "
        "offset, what it recorded; and its steps with their truth and U (k=2)")
    show.add_argument("--config", required=True, help="station TOML file")
    show.add_argument("run_id")
    show.set_defaults(func=cmd_show)

    export = actions.add_parser(
        "export", help="one run as CSV and Parquet files, run.json and results.json",
        description="Export one run into the folder DIR for analysis.", epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("--config", required=True, help="station TOML file")
    export.add_argument("run_id")
    export.add_argument("--out", required=True, metavar="DIR",
                        help="a new or empty folder (made if missing)")
    export.add_argument("--dut", type=dut_id,
                        help="only this DUT's reports, and its results as results.json")
    export.add_argument("--force", action="store_true",
                        help="write into a folder that is not empty, replacing a bundle there")
    export.set_defaults(func=cmd_export)
