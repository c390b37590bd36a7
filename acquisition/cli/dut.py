"""`crf dut`: reports of the device under test (DUT). `import` brings a CSV file of them
into a run, all rows or none; `show` prints a run's steps beside the reports matched to
them with the DUT's parameters as configured now.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from acquisition.cli.common import dut_id, with_store
from acquisition.config.station import StationConfig
from acquisition.exit_codes import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:  # the store and the dut wing are imported when a command runs
    from acquisition.store.store import Store


def cmd_import(args: argparse.Namespace) -> int:
    from acquisition.dut.importer import ImportRefused, import_csv
    from acquisition.store.store import DuplicateImportError

    try:
        data = Path(args.file).read_bytes()
    except OSError as error:
        print(f"crf dut import: cannot read {args.file}: {error.strerror}", file=sys.stderr)
        return EXIT_FAILED

    async def work(config: StationConfig, store: Store) -> int:
        try:
            count = await import_csv(store, config, args.run_id, data, args.dut)
        except ImportRefused as refused:
            print(f"crf dut import: {args.file}: nothing imported, {len(refused.problems)} "
                  "problem(s):", file=sys.stderr)
            for line, text in refused.problems:
                print(f"{args.file}:{line}: {text}" if line else f"{args.file}: {text}",
                      file=sys.stderr)
            return EXIT_FAILED
        except DuplicateImportError as error:
            print(f"crf dut import: {args.file} was imported before, nothing imported "
                  f"({error})", file=sys.stderr)
            return EXIT_FAILED
        print(f"{args.file}: {count} report(s) imported into run {args.run_id}")
        return EXIT_OK

    return with_store(f"crf dut {args.dut_command}", args.config, work, writes=True)


def cmd_show(args: argparse.Namespace) -> int:
    from acquisition.dut.show import load, render

    async def work(config: StationConfig, store: Store) -> int:
        run, steps, results = await load(store, config, args.run_id, args.dut)
        render(run, steps, results, sys.stdout)
        return EXIT_OK

    return with_store(f"crf dut {args.dut_command}", args.config, work)


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dut = commands.add_parser("dut", help="reports of the device under test: import, show")
    actions = dut.add_subparsers(dest="dut_command", metavar="COMMAND", required=True)
    importer = actions.add_parser(
        "import", help="import a CSV file of DUT reports into a run: every row checked, "
        "then all imported or none; a file imported before is refused")
    importer.add_argument("--config", required=True, help="station TOML file")
    importer.add_argument("run_id", help="the run the reports belong to")
    importer.add_argument("file", help="CSV file with a header row")
    importer.add_argument("--dut", type=dut_id,
                          help="DUT of every row (its [dut.*] columns and time zone apply); "
                          "default: each row's dut_id column")
    importer.set_defaults(func=cmd_import)
    show = actions.add_parser(
        "show", help="a run's steps and the DUT reports matched to them, with the DUT's "
        "matching parameters as configured now")
    show.add_argument("--config", required=True, help="station TOML file")
    show.add_argument("run_id")
    show.add_argument("--dut", type=dut_id, help="only this DUT's reports")
    show.set_defaults(func=cmd_show)
