"""Driving devices to their safe state: every MFC at zero flow, each under its own timeout.

One device failing or hanging never keeps the others from being zeroed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from drivers.mfc import MfcDriver
from drivers.modbus_line import ModbusError


async def zero_one(mfc: MfcDriver, timeout_s: float) -> str | None:
    """Zero one MFC; return None when confirmed, else why it could not be confirmed."""
    try:
        async with asyncio.timeout(timeout_s):
            await mfc.zero()
    except TimeoutError:
        return f"{mfc.name}: no confirmation within {timeout_s} s"
    except ModbusError as error:
        return str(error)
    return None


async def zero_all(mfcs: Iterable[MfcDriver], timeout_s: float) -> dict[str, str | None]:
    """Zero every MFC concurrently (lines serialize their own traffic); report per device."""
    mfcs = list(mfcs)
    results = await asyncio.gather(*(zero_one(mfc, timeout_s) for mfc in mfcs))
    return {mfc.name: result for mfc, result in zip(mfcs, results, strict=True)}
