"""How the record and the certificate write numbers and times: one function per kind of
figure, used by the templates (as filters) and by whoever checks what they show."""

from __future__ import annotations

from datetime import UTC, datetime

from acquisition.times import NS_PER_S

MISSING = "—"  # a figure that does not exist (None)


def fixed(value: float | None, decimals: int) -> str:
    """`value` with `decimals` digits after the point; MISSING for None."""
    return MISSING if value is None else f"{value:.{decimals}f}"


def percent(value: float | None) -> str:
    """Relative errors, uncertainties and repeatabilities, in %."""
    return fixed(value, 2)


def metres(value: float | None) -> str:
    """Localization errors, spreads and offsets, in m."""
    return fixed(value, 2)


def kg_h(value: float | None) -> str:
    """Release rates in kg/h: 0.1 g/h resolution, finer than any CRF's uncertainty."""
    return fixed(value, 4)


def plus_minus(value: str, uncertainty: str) -> str:
    """`value ± U`, or the value alone when it has no uncertainty."""
    return value if uncertainty == MISSING or value == MISSING else f"{value} ± {uncertainty}"


def utc(t_ns: int | None, with_date: bool = True) -> str:
    """A store time (UTC nanoseconds) to the millisecond, marked UTC."""
    if t_ns is None:
        return MISSING
    moment = datetime.fromtimestamp(t_ns / NS_PER_S, UTC)
    text = moment.strftime("%Y-%m-%d %H:%M:%S.%f" if with_date else "%H:%M:%S.%f")
    return text[:-3] + (" UTC" if with_date else "")


def duration(start_ns: int | None, end_ns: int | None) -> str:
    """h:mm:ss.s between two store times."""
    if start_ns is None or end_ns is None:
        return MISSING
    seconds = (end_ns - start_ns) / NS_PER_S
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{int(hours)}:{int(minutes):02d}:{seconds:04.1f}"


def significant(value: float | None, digits: int = 3) -> str:
    """Standard uncertainties and spreads: `digits` significant digits."""
    return MISSING if value is None else f"{value:.{digits}g}"
