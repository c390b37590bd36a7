"""`crf report`: a run's results.json, its original calibration record and the
certificate's results page, as HTML and PDF, in Chinese and English or one of them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from acquisition.cli.common import dut_id, with_store
from acquisition.config.station import StationConfig
from acquisition.exit_codes import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:  # the store and the report wing are imported when the command runs
    from acquisition.store.store import Store


def cmd_report(args: argparse.Namespace) -> int:
    from acquisition.report.gather import gather
    from acquisition.report.labels import Labels

    async def work(config: StationConfig, store: Store) -> int:
        data = await gather(store, config, args.run_id, args.dut)
        from acquisition.report.render import write_report  # matplotlib, WeasyPrint

        try:
            written = write_report(data, config, Labels(args.lang or "both"), Path(args.out))
        except OSError as error:
            print(f"crf report: cannot write {error.filename or args.out}: "
                  f"{error.strerror or error}", file=sys.stderr)
            return EXIT_FAILED
        for path in written:
            print(path)
        return EXIT_OK

    return with_store("crf report", args.config, work)


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    report = commands.add_parser(
        "report", help="write a run's results.json, calibration record and certificate "
        "(HTML and PDF) into a folder")
    report.add_argument("run_id")
    report.add_argument("--config", required=True, help="station TOML file")
    report.add_argument("--out", required=True, metavar="DIR",
                        help="folder for the files (made if need be)")
    report.add_argument("--lang", choices=["zh", "en"],
                        help="one language only (default: Chinese and English together)")
    report.add_argument("--dut", type=dut_id,
                        help="the DUT to calibrate (needed when several reported in the run)")
    report.set_defaults(func=cmd_report)
