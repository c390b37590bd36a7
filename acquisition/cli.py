"""The `crf` command line: one entry point for checking configs, the daemon and plugins."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from acquisition import __version__

PLUGIN_GROUP = "crf.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crf",
        description="Controlled Release Facility data acquisition: MFCs over Modbus, "
        "recorded to a SQLite run store.",
    )
    parser.add_argument("--version", action="version", version=f"crf-daq {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Other packages (the simulators) add commands through entry points, so this
    # module never imports them.
    for plugin in entry_points(group=PLUGIN_GROUP):
        plugin.load()(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
