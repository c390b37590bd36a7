"""`crf run`: one calibration sequence in the foreground, with a live progress line.

The daemon runs underneath (polling, recording, interlocks); the sequence starts once
every device is confirmed safe. Ctrl-C aborts the run safely (a second Ctrl-C stops
the daemon at once, which still zeroes everything); SIGTERM does the same as a stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import TYPE_CHECKING, TextIO

from acquisition.cli.common import load_or_report, run_acquisition
from acquisition.config.station import ConfigError, StationConfig
from acquisition.exit_codes import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, report_unsafe
from acquisition.run.sequence import Plan, load_sequence
from acquisition.run.state import RunRejectedError, State
from acquisition.run.status import progress_line
from acquisition.store.store import StoreError

if TYPE_CHECKING:  # the daemon is imported when a run starts: `crf ctl` stays light
    from acquisition.daemon.daemon import Daemon

REFRESH_S = 1.0


def summary(daemon: Daemon, out: TextIO) -> None:
    status = daemon.scheduler.status
    print(f"\nrun {status.run_id}: {status.state}"
          + (f" ({status.reason})" if status.reason else ""), file=out)
    print(f"{'step':>4}  {'point':<8} {'target':>14}  {'truth kg/h':>12}  {'U (k=2)':>10}",
          file=out)
    for result in status.results:
        truth = (f"{result.truth_kg_h:>12.5g}  {result.u_expanded_kg_h:>10.2g}"
                 if result.truth_kg_h is not None and result.u_expanded_kg_h is not None
                 else f"{'-':>12}")
        print(f"{result.step:>4}  {result.point:<8} {result.target:>14}  {truth}", file=out)
    print(f"store: {daemon.config.storage.path}", file=out)


async def _show_progress(daemon: Daemon, out: TextIO) -> None:
    tty = out.isatty()
    last = ""
    while True:
        line = progress_line(daemon.scheduler.snapshot())
        if tty:
            print(f"\r\033[K{line}", end="", file=out, flush=True)
        elif line.split("  ETA")[0] != last:  # a log: only when something changed
            print(line, file=out, flush=True)
        last = line.split("  ETA")[0]
        await asyncio.sleep(REFRESH_S)


async def _confirmed_safe(daemon: Daemon, within_s: float, out: TextIO) -> bool:
    """No release while a device may still be flowing: wait (the keeper retries) until
    every device is confirmed safe, up to `within_s`."""
    keeper = daemon.keeper
    if not keeper.unconfirmed():
        return True
    print(f"\nwaiting for {', '.join(keeper.unconfirmed())} to be confirmed safe before the "
          f"run starts (up to {within_s:g} s)", file=out, flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(keeper.until(lambda: not keeper.unconfirmed()), within_s)
    return not keeper.unconfirmed()


async def run_sequence(config: StationConfig, plan: Plan, operator: str | None,
                       dut: str | None, out: TextIO = sys.stderr) -> int:
    """Run the sequence; the exit code. The process does not end while a device the
    run touched is not confirmed safe, up to `safety.safe_wait_s` of retrying."""
    from acquisition.daemon.daemon import Daemon

    daemon = Daemon(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        if daemon.scheduler.running and not stop.is_set():
            print("\nCtrl-C: aborting the run, making everything safe "
                  "(Ctrl-C again to stop at once)", file=out, flush=True)
            daemon.scheduler.abort("operator interrupt (Ctrl-C)")
            loop.remove_signal_handler(signal.SIGINT)
            loop.add_signal_handler(signal.SIGINT, stop.set)
        else:
            stop.set()

    loop.add_signal_handler(signal.SIGINT, interrupt)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    acquiring = asyncio.create_task(daemon.run(stop), name="daemon")
    ready = asyncio.create_task(daemon.ready.wait())
    await asyncio.wait([acquiring, ready], return_when=asyncio.FIRST_COMPLETED)
    if acquiring.done():
        ready.cancel()
        acquiring.result()
        return EXIT_FAILED
    display = asyncio.create_task(_show_progress(daemon, out), name="progress")
    started = False
    try:
        if await _confirmed_safe(daemon, config.safety.safe_wait_s, out):
            await daemon.scheduler.start(plan, operator, dut)
            started = True
            finished = asyncio.create_task(daemon.scheduler.wait())
            await asyncio.wait([finished, acquiring], return_when=asyncio.FIRST_COMPLETED)
    except RunRejectedError as error:
        print(f"\ncrf run: the run cannot start: {error}", file=out)
    finally:
        display.cancel()
        stop.set()
        if daemon.keeper.unconfirmed():
            print(f"\nwaiting for {', '.join(daemon.keeper.unconfirmed())} to be confirmed "
                  f"safe (retrying for up to {config.safety.safe_wait_s:g} s)",
                  file=out, flush=True)
        await acquiring
    if started:
        summary(daemon, out)
    if daemon.store_failure is not None:
        print(f"crf run: {daemon.store_failure}", file=out)
    if unconfirmed := daemon.keeper.unconfirmed():
        return report_unsafe(unconfirmed, config.safety.safe_wait_s, out)
    return EXIT_OK if daemon.scheduler.status.state is State.COMPLETED else EXIT_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    from acquisition.logs import configure_logging

    config = load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    try:
        plan = load_sequence(args.sequence, config)
    except ConfigError as error:
        print(f"sequence error:\n{error}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(args.log_level)
    try:
        return run_acquisition(run_sequence(config, plan, args.operator, args.dut))
    except StoreError as error:  # the store could not be opened
        print(f"crf run: {error}", file=sys.stderr)
        return EXIT_FAILED


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    run = commands.add_parser("run", help="run one calibration sequence in the foreground")
    run.add_argument("--config", required=True, help="station TOML file")
    run.add_argument("--sequence", required=True,
                     help="sequence name (in the config's sequences_dir) or a TOML path")
    run.add_argument("--operator", help="who runs it (recorded with the run)")
    run.add_argument("--dut", help="device under test (recorded with the run)")
    run.add_argument("--log-level", default="warning",
                     choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=cmd_run)
