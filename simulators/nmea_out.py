"""NMEA 0183 sentences as receivers and weather stations send them, checksums by pynmea2.

Coordinates go out as ddmm.mmmmmmm / dddmm.mmmmmmm (7 decimals of a minute, 0.2 mm,
as RTK receivers' high-precision NMEA does: at 5 decimals the last digit is 1.85 cm,
coarser than RTK-fixed noise), times as hhmmss.ss, every line ending in CRLF.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import pynmea2

MINUTE_DECIMALS = 7
NO_DOP = 99.99  # what receivers print for a DOP they cannot compute
KNOTS_PER_M_S = 3600 / 1852
INCHES_HG_PER_HPA = 1 / 33.8639
SYSTEMS_OF_TALKER = {"GN": 4}  # GNS mode: one character per constellation (GPS, GLO, GAL, BDS)


def render(talker: str, kind: str, fields: Sequence[str]) -> bytes:
    """`$<talker><kind>,<fields>*HH\\r\\n`."""
    sentence = pynmea2.TalkerSentence.sentence_types[kind](talker, kind, tuple(fields))
    return str(sentence.render(newline=True)).encode("ascii")


def _angle(value: float, degree_digits: int, hemispheres: str) -> tuple[str, str]:
    scale = 10**MINUTE_DECIMALS
    degrees, minutes = divmod(round(abs(value) * 60 * scale), 60 * scale)  # no 60.0 minutes
    whole, fraction = divmod(minutes, scale)
    text = f"{degrees:0{degree_digits}d}{whole:02d}.{fraction:0{MINUTE_DECIMALS}d}"
    return text, hemispheres[value < 0]


def latitude(value: float | None) -> tuple[str, str]:
    """ddmm.mmmmmmm and N/S; two empty fields without a fix."""
    return ("", "") if value is None else _angle(value, 2, "NS")


def longitude(value: float | None) -> tuple[str, str]:
    """dddmm.mmmmmmm and E/W; two empty fields without a fix."""
    return ("", "") if value is None else _angle(value, 3, "EW")


def _utc(seconds: float) -> tuple[dt.date, str]:
    """Date and hhmmss.ss of a POSIX time, both from the same rounding (23:59:59.996)."""
    days, centis = divmod(round(seconds * 100), 86_400 * 100)
    hours, centis = divmod(centis, 360_000)
    minutes, centis = divmod(centis, 6000)
    return (dt.date(1970, 1, 1) + dt.timedelta(days=days),
            f"{hours:02d}{minutes:02d}{centis // 100:02d}.{centis % 100:02d}")


def _number(value: float | None, decimals: int) -> str:
    return "" if value is None else f"{value:.{decimals}f}"


@dataclass(frozen=True)
class Epoch:
    """What a receiver reports at one epoch; position fields are None without a fix."""

    utc: float  # receiver UTC, POSIX seconds
    quality: int  # GGA fix quality
    mode: str  # RMC / GNS mode character (N, A, D, F, R)
    lat: float | None
    lon: float | None
    alt: float | None
    sats: int
    hdop: float
    vdop: float
    pdop: float
    sigma_h: float | None  # 1-sigma, metres, per horizontal axis
    sigma_v: float | None
    prns: tuple[int, ...]  # satellites used (GSA lists up to 12)
    differential: bool  # corrections in use: GGA carries their age and station id


def gga(talker: str, e: Epoch) -> bytes:
    age, station = ("1.0", "0000") if e.differential and e.quality else ("", "")
    return render(talker, "GGA", [
        _utc(e.utc)[1], *latitude(e.lat), *longitude(e.lon), str(e.quality), f"{e.sats:02d}",
        _number(e.hdop, 2), _number(e.alt, 3), "M" if e.alt is not None else "", "", "", age,
        station])


def rmc(talker: str, e: Epoch) -> bytes:
    date, time = _utc(e.utc)
    fixed = e.lat is not None
    return render(talker, "RMC", [
        time, "A" if fixed else "V", *latitude(e.lat), *longitude(e.lon),
        "0.000" if fixed else "", "", date.strftime("%d%m%y"), "", "", e.mode, "V"])


def gns(talker: str, e: Epoch) -> bytes:
    age, station = ("1.0", "0000") if e.differential and e.quality else ("", "")
    return render(talker, "GNS", [
        _utc(e.utc)[1], *latitude(e.lat), *longitude(e.lon),
        e.mode * SYSTEMS_OF_TALKER.get(talker, 1), f"{e.sats:02d}", _number(e.hdop, 2),
        _number(e.alt, 3), "", age, station])


def gst(talker: str, e: Epoch) -> bytes:
    h, v = _number(e.sigma_h, 3), _number(e.sigma_v, 3)
    orientation = "" if e.sigma_h is None else "0.0"
    return render(talker, "GST", [_utc(e.utc)[1], h, h, h, orientation, h, h, v])


def zda(talker: str, e: Epoch) -> bytes:
    date, time = _utc(e.utc)
    return render(talker, "ZDA", [time, f"{date.day:02d}", f"{date.month:02d}",
                                  f"{date.year:04d}", "00", "00"])


def gsa(talker: str, e: Epoch) -> bytes:
    used = [f"{prn:02d}" for prn in e.prns[:12]]
    return render(talker, "GSA", [
        "A", "3" if e.lat is not None else "1", *used, *[""] * (12 - len(used)),
        _number(e.pdop, 2), _number(e.hdop, 2), _number(e.vdop, 2)])


GNSS_SENTENCES = {"GGA": gga, "RMC": rmc, "GNS": gns, "GST": gst, "ZDA": zda, "GSA": gsa}


def mwv(direction_deg: float, speed_m_s: float) -> bytes:
    """True wind (from, degrees) in m/s, valid."""
    return render("WI", "MWV", [f"{direction_deg:.1f}", "T", f"{speed_m_s:.1f}", "M", "A"])


def mda(pressure_hpa: float, temperature_c: float, direction_deg: float,
        speed_m_s: float) -> bytes:
    """Meteorological composite: pressure (inHg, bar), air temperature, true wind."""
    return render("WI", "MDA", [
        f"{pressure_hpa * INCHES_HG_PER_HPA:.4f}", "I", f"{pressure_hpa / 1000:.5f}", "B",
        f"{temperature_c:.1f}", "C", "", "", "", "", "", "",
        f"{direction_deg:.1f}", "T", "", "", f"{speed_m_s * KNOTS_PER_M_S:.1f}", "N",
        f"{speed_m_s:.1f}", "M"])
