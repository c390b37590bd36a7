"""What every `crf` command needs: a config read with its errors printed, a run store
opened for a tool, a way to stop."""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import uvloop

from acquisition.config.station import ConfigError, StationConfig, load_config
from acquisition.config.tables import DUT_ID_PATTERN
from acquisition.exit_codes import EXIT_CONFIG, EXIT_FAILED

if TYPE_CHECKING:  # the store is imported when a command runs: check-config stays light
    from acquisition.store.store import Store


def load_or_report(path: str) -> StationConfig | None:
    try:
        return load_config(path)
    except ConfigError as error:
        print(f"config error{'s' if len(error.problems) > 1 else ''}:\n{error}", file=sys.stderr)
        return None


def dut_id(value: str) -> str:
    """A `--dut` argument: refused at once if it cannot be a DUT id."""
    if not re.fullmatch(DUT_ID_PATTERN, value):
        raise argparse.ArgumentTypeError(f"'{value}': a DUT id is 1-64 letters, digits, "
                                         "'_', '.' or '-'")
    return value


def with_store(command: str, config_path: str,
               work: Callable[[StationConfig, Store], Awaitable[int]], *,
               writes: bool = False) -> int:
    """Load the config, open its run store (never made here: a new empty store would only
    hide a wrong path) read-only unless the tool `writes`, do `work`; the exit code. A
    missing run, an ambiguous or unknown DUT or a store error is one line on stderr
    starting with `command`, and exit 1."""
    from acquisition.dut.records import UnknownRunError
    from acquisition.results.loader import AmbiguousDutError, UnknownDutError
    from acquisition.store.store import Store, StoreError

    config = load_or_report(config_path)
    if config is None:
        return EXIT_CONFIG
    if not config.storage.path.exists():
        print(f"{command}: no run store at {config.storage.path}", file=sys.stderr)
        return EXIT_FAILED

    async def in_store() -> int:
        store = Store(config.storage.path, config.storage.max_size_mb, read_only=not writes)
        try:
            await store.open()
            return await work(config, store)
        finally:
            await store.close()

    try:
        return asyncio.run(in_store())
    except (UnknownRunError, AmbiguousDutError, UnknownDutError, StoreError) as error:
        print(f"{command}: {error}", file=sys.stderr)
        return EXIT_FAILED


T = TypeVar("T")


def run_acquisition(main: Coroutine[Any, Any, T]) -> T:
    """Run the daemon's event loop on uvloop: the same asyncio, about a sixth less CPU at
    nominal load (benchmarks/footprint.py), which is what a Raspberry Pi has least of."""
    return uvloop.run(main)


def stop_on_signals(duration: float | None = None) -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, or after `duration` seconds: the way to stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)
    return stop
