"""Driving devices to their safe state: every MFC at zero flow, every shutoff valve closed.

Each device gets its own timeout and one failing or hanging never keeps the others from
being made safe. The result says, per device, whether the safe state was confirmed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from drivers.mfc import MfcDriver
from drivers.modbus_line import ModbusError
from drivers.valve import ShutoffValve


async def _confirm(name: str, action: Callable[[], Awaitable[None]], timeout_s: float
                   ) -> str | None:
    try:
        async with asyncio.timeout(timeout_s):
            await action()
    except TimeoutError:
        return f"{name}: no confirmation within {timeout_s} s"
    except ModbusError as error:
        return str(error)
    return None


async def zero_one(mfc: MfcDriver, timeout_s: float) -> str | None:
    """Zero one MFC; return None when confirmed, else why it could not be confirmed."""
    return await _confirm(mfc.name, mfc.zero, timeout_s)


async def close_one(valve: ShutoffValve, timeout_s: float) -> str | None:
    return await _confirm(valve.name, valve.close, timeout_s)


async def make_all_safe(mfcs: Iterable[MfcDriver], valves: Iterable[ShutoffValve],
                        timeout_s: float) -> dict[str, str | None]:
    """Zero every MFC and close every valve, concurrently; report per device."""
    jobs = {mfc.name: zero_one(mfc, timeout_s) for mfc in mfcs}
    jobs |= {valve.name: close_one(valve, timeout_s) for valve in valves}
    results = await asyncio.gather(*jobs.values())
    return dict(zip(jobs, results, strict=True))


def unconfirmed(results: dict[str, str | None]) -> dict[str, str]:
    """The devices of a `make_all_safe` result that were not confirmed, with why."""
    return {name: problem for name, problem in results.items() if problem}
