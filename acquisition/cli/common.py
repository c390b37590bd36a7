"""What every `crf` command needs: a config read with its errors printed, a way to stop."""

from __future__ import annotations

import asyncio
import signal
import sys

from acquisition.config.station import ConfigError, StationConfig, load_config


def load_or_report(path: str) -> StationConfig | None:
    try:
        return load_config(path)
    except ConfigError as error:
        print(f"config error{'s' if len(error.problems) > 1 else ''}:\n{error}", file=sys.stderr)
        return None



def stop_on_signals(duration: float | None = None) -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, or after `duration` seconds: the way to stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)
    return stop
