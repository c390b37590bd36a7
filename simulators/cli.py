"""`crf sim`: run a station's simulated devices until stopped (registered as a `crf` plugin)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from acquisition.cli.common import stop_on_signals
from acquisition.config.station import ConfigError, load_config
from acquisition.exit_codes import EXIT_CONFIG, EXIT_FAILED
from acquisition.logs import configure_logging
from simulators.settings import SimConfigError
from simulators.station import SimStation


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `sim` command to the `crf` parser (entry point `crf.commands`)."""
    parser = subparsers.add_parser(
        "sim", help="serve a config's MFCs, anemometers, GNSS receivers and NMEA weather "
                    "stations as simulated devices on ptys and TCP ports"
    )
    parser.add_argument("--config", required=True, help="station TOML file")
    parser.add_argument("--no-pace", action="store_true",
                        help="answer at once instead of at the serial lines' byte timing")
    parser.add_argument("--seed", type=int, help="noise seed (default: [sim] seed, else random)")
    parser.add_argument("--duration", type=float, metavar="SECONDS",
                        help="stop after this long (default: until SIGTERM/SIGINT)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        station = SimStation(config, pace=False if args.no_pace else None, seed=args.seed,
                             base=Path(args.config).parent)
    except ConfigError as error:
        print(f"config error:\n{error}", file=sys.stderr)
        return EXIT_CONFIG
    except SimConfigError as error:
        print(f"config error:\n{ConfigError(Path(args.config), error.problems)}",
              file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as error:  # a profile the simulator cannot serve
        print(f"crf sim: {error}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging("info")
    try:
        asyncio.run(_serve(station, args.duration))
    except OSError as error:  # port path taken, TCP port in use
        print(f"crf sim: {error}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _toggle_cables(station: SimStation) -> None:
    """SIGUSR1: pull (or plug back) the cable of every Modbus line, for field rehearsals."""
    for line in station.lines.values():
        if line.bus.cable_pulled:
            line.plug_cable()
        else:
            line.pull_cable()
        print(f"{line.name}: cable {'pulled' if line.bus.cable_pulled else 'plugged back'}",
              flush=True)


async def _serve(station: SimStation, duration: float | None) -> None:
    stop = stop_on_signals(duration)
    async with station:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _toggle_cables, station)
        for line in station.describe():
            print(line)
        print("kill -USR1 this process to pull or plug back the Modbus cables")
        sys.stdout.flush()
        await stop.wait()
