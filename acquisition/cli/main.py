"""The `crf` command line: check a config, run the daemon, and commands added by plugins."""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

from acquisition import __version__
from acquisition.cli import ctl
from acquisition.cli import dut as dut_cli
from acquisition.cli import report as report_cli
from acquisition.cli import run as run_cli
from acquisition.cli import runs as runs_cli
from acquisition.cli.common import load_or_report, run_acquisition, stop_on_signals
from acquisition.config.station import StationConfig
from acquisition.exit_codes import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    report_unsafe,
)
from acquisition.logs import configure_logging

PLUGIN_GROUP = "crf.commands"


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_or_report(args.path)
    if config is None:
        return EXIT_CONFIG
    if args.json:
        print(config.model_dump_json(indent=2))
    else:
        print(f"{args.path}: ok (station {config.station}, {len(config.lines)} line(s), "
              f"{len(config.mfcs)} MFC(s), {len(config.gnss)} GNSS receiver(s), "
              f"{len(config.met)} met station(s), {len(config.analyzers)} gas analyzer(s), "
              f"{len(config.release_points)} release point(s), {len(config.dut)} DUT(s))")
    return 0


async def _run_daemon(config: StationConfig, duration: float | None) -> int:
    from acquisition.daemon.daemon import Daemon  # imported late: check-config stays light

    daemon = Daemon(config)
    await daemon.run(stop_on_signals(duration))
    if daemon.store_failure is not None:
        print(f"crf daemon: {daemon.store_failure}", file=sys.stderr)
    if unconfirmed := daemon.keeper.unconfirmed():
        return report_unsafe(unconfirmed, config.safety.safe_wait_s, sys.stderr)
    return EXIT_OK if daemon.store_failure is None else EXIT_FAILED


def cmd_daemon(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    configure_logging(args.log_level)
    from acquisition.store.store import StoreError

    try:
        return run_acquisition(_run_daemon(config, args.duration))
    except StoreError as error:  # the store could not be opened
        print(f"crf daemon: {error}", file=sys.stderr)
        return EXIT_FAILED


def cmd_gnss_decode(args: argparse.Namespace) -> int:
    from drivers.gnss import decode_capture

    try:
        data = Path(args.path).read_bytes()
    except OSError as error:
        print(f"crf gnss decode: cannot read {args.path}: {error.strerror}", file=sys.stderr)
        return 1
    fixes, stats = decode_capture(data)
    for fix in fixes:
        record = fix.to_dict()
        del record["t_ns"]  # host time of decoding: meaningless for a capture
        print(json.dumps(record))
    print(json.dumps({"file": args.path, "fixes": len(fixes), **stats}), file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crf",
        description="Controlled Release Facility data acquisition: MFCs over Modbus, "
        "recorded to a SQLite run store.",
    )
    parser.add_argument("--version", action="version", version=f"crf-daq {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser("check-config", help="validate a station config file")
    check.add_argument("path", help="station TOML file")
    check.add_argument("--json", action="store_true",
                       help="print the validated config, defaults filled in, as JSON")
    check.set_defaults(func=cmd_check_config)

    daemon = commands.add_parser("daemon", help="poll and record every configured device")
    daemon.add_argument("--config", required=True, help="station TOML file")
    daemon.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop after this long (default: until SIGTERM/SIGINT)")
    daemon.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    daemon.set_defaults(func=cmd_daemon)

    run_cli.add_parser(commands)
    ctl.add_parser(commands)
    dut_cli.add_parser(commands)
    report_cli.add_parser(commands)
    runs_cli.add_parser(commands)

    gnss = commands.add_parser("gnss", help="GNSS tools")
    gnss_commands = gnss.add_subparsers(dest="gnss_command", metavar="COMMAND", required=True)
    decode = gnss_commands.add_parser(
        "decode", help="print one JSON object per position fix in an NMEA capture file; "
        "counts of sentences and rejected lines go to stderr")
    decode.add_argument("path", help="NMEA 0183 log (CR/LF or LF, '#' comments allowed)")
    decode.set_defaults(func=cmd_gnss_decode)

    # Other packages (the simulators) add commands through entry points, so this
    # module never imports them.
    for plugin in entry_points(group=PLUGIN_GROUP):
        try:
            plugin.load()(commands)
        except Exception as error:  # a broken add-on must not take the daemon down with it
            print(f"crf: command '{plugin.name}' unavailable: {error}", file=sys.stderr)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # the daemon and crf run handle SIGINT themselves
        print(f"crf {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED

