"""GNSS receiver interpretation: validated NMEA sentences -> position fixes and samples.

Which sentence supplies what:

- position: GGA and GNS, each a `Fix` (a receiver sending both gives two per epoch).
  GNS carries one mode character per constellation (GPS, GLONASS, Galileo, BeiDou...,
  "ANNA" from the SiRF TriG capture in the tests); the best of them is the fix quality.
- quality: the GGA fix quality indicator, or the GNS modes mapped onto the same scale;
  GST gives the position error sigmas (`sigma_lat`, `sigma_lon`, `sigma_alt`), GSA the
  DOPs (`gsa_pdop`, `gsa_hdop`, `gsa_vdop`), GGA/GNS the satellites used and HDOP.
- time: RMC (date and time) and ZDA (date and time) set the receiver's date and its
  clock offset to the host; GGA and GNS carry only the time of day, so a fix gets a full
  UTC only once RMC or ZDA has given the date.

Everything else (GSV, GLL, VTG, TXT...) is counted as `ignored:<type>`. pynmea2 checks
the checksum but leaves fields it could not convert as raw strings, so every field
used here goes through `number_field`, and a sentence with a field that is not what it
should be is counted as malformed instead of producing a wrong position.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Literal

import pynmea2

from drivers.nmea import FieldError, NmeaDecoder, Sentence, number_field
from drivers.sample import Sample

# GGA fix quality indicator (NMEA 0183 v4.1).
FIX_QUALITY = {0: "none", 1: "autonomous", 2: "dgnss", 3: "pps", 4: "rtk_fixed",
               5: "rtk_float", 6: "estimated", 7: "manual", 8: "simulation"}
# GNS mode characters, one per constellation, mapped onto the GGA scale.
GNS_MODE = {"N": 0, "A": 1, "D": 2, "P": 2, "R": 4, "F": 5, "E": 6, "M": 7, "S": 8}
# Which quality is better for surveying: RTK fixed first, "none" last.
QUALITY_RANK = {4: 7, 5: 6, 2: 5, 3: 5, 1: 4, 6: 1, 7: 1, 8: 1, 0: 0}
SurveyQuality = Literal["autonomous", "dgnss", "rtk_float", "rtk_fixed"]
SURVEY_QUALITY_CODE = {"autonomous": 1, "dgnss": 2, "rtk_float": 5, "rtk_fixed": 4}


def at_least(quality: int, minimum: SurveyQuality) -> bool:
    """Is a fix of this GGA quality good enough for a survey that asks for `minimum`?"""
    return QUALITY_RANK.get(quality, 0) >= QUALITY_RANK[SURVEY_QUALITY_CODE[minimum]]


def _coordinates(message: pynmea2.NMEASentence) -> tuple[float, float]:
    try:
        lat, lon = float(message.latitude), float(message.longitude)
    except (TypeError, ValueError) as error:
        raise FieldError(f"{message.sentence_type}: bad coordinate: {error}") from None
    if message.lat_dir not in ("N", "S") or message.lon_dir not in ("E", "W"):
        raise FieldError(f"{message.sentence_type}: hemisphere must be N/S and E/W")
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise FieldError(f"{message.sentence_type}: coordinate out of range ({lat}, {lon})")
    return lat, lon


@dataclass(frozen=True, slots=True)
class Fix:
    """One position fix (GGA or GNS) with the host time it arrived."""

    t_ns: int
    time_of_day: str | None  # receiver UTC time of day, as sent
    utc: str | None  # receiver UTC, ISO 8601, when the date is known (RMC/ZDA seen)
    lat: float | None
    lon: float | None
    alt: float | None
    quality: int
    quality_name: str
    sats: int | None
    hdop: float | None
    talker: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GnssInterpreter:
    """Keeps the receiver's date and clock offset; turns sentences into fixes and samples."""

    def __init__(self, device: str, stats: Counter[str]) -> None:
        self.device = device
        self.stats = stats
        self.date: dt.date | None = None
        self.clock_offset_s: float | None = None  # receiver UTC minus host clock
        self.clock_readings = 0
        self.last_fix: Fix | None = None
        self.last_error: str | None = None

    def interpret(self, sentence: Sentence) -> tuple[list[Sample], Fix | None]:
        """Samples for one sentence, and the fix if it was a position sentence."""
        handler = getattr(self, f"_on_{sentence.kind.lower()}", None)
        if handler is None:
            self.stats[f"ignored:{sentence.kind}"] += 1
            return [], None
        try:
            return handler(sentence)
        except FieldError as error:
            self.stats["malformed"] += 1
            self.last_error = str(error)
            return [], None

    def _sample(self, sentence: Sentence, channel: str, value: float | None,
                unit: str) -> Sample:
        return Sample(sentence.t_ns, sentence.mono_ns, self.device, channel, value, unit)

    def _utc(self, time_of_day: dt.time | None) -> dt.datetime | None:
        if self.date is None or not isinstance(time_of_day, dt.time):
            return None
        return dt.datetime.combine(self.date, time_of_day).replace(tzinfo=dt.UTC)

    def _fix(self, sentence: Sentence, quality: int, sats: float | None, hdop: float | None,
             alt: float | None) -> tuple[list[Sample], Fix]:
        message = sentence.message
        lat, lon = _coordinates(message) if quality > 0 else (None, None)
        timestamp = message.timestamp  # pynmea2 parses a field on every access: once
        utc = self._utc(timestamp)
        time_of_day = timestamp.isoformat() if isinstance(timestamp, dt.time) else None
        fix = Fix(sentence.t_ns, time_of_day, utc.isoformat() if utc else None, lat, lon,
                  alt if quality > 0 else None, quality, FIX_QUALITY.get(quality, "unknown"),
                  int(sats) if sats is not None else None, hdop, message.talker)
        self.last_fix = fix
        samples = [self._sample(sentence, "fix_quality", quality, "")]
        if sats is not None:
            samples.append(self._sample(sentence, "sats", sats, ""))
        if hdop is not None:
            samples.append(self._sample(sentence, "hdop", hdop, ""))
        if quality > 0:
            samples += [self._sample(sentence, "lat", lat, "deg"),
                        self._sample(sentence, "lon", lon, "deg")]
            if alt is not None:
                samples.append(self._sample(sentence, "alt", alt, "m"))
        return samples, fix

    def _on_gga(self, sentence: Sentence) -> tuple[list[Sample], Fix]:
        message = sentence.message
        quality = number_field(message, "gps_qual")
        if quality is None or quality not in FIX_QUALITY:
            raise FieldError(f"GGA: fix quality {message.gps_qual!r} is not 0-8")
        return self._fix(sentence, int(quality), number_field(message, "num_sats", optional=True),
                         number_field(message, "horizontal_dil", optional=True),
                         number_field(message, "altitude", optional=True))

    def _on_gns(self, sentence: Sentence) -> tuple[list[Sample], Fix]:
        message = sentence.message
        modes = str(message.mode_indicator or "")
        if not modes or any(mode not in GNS_MODE for mode in modes):
            raise FieldError(f"GNS: mode indicator {modes!r} is not valid")
        quality = max((GNS_MODE[mode] for mode in modes), key=lambda q: QUALITY_RANK[q])
        return self._fix(sentence, quality, number_field(message, "num_sats", optional=True),
                         number_field(message, "hdop", optional=True),
                         number_field(message, "altitude", optional=True))

    def _clock(self, sentence: Sentence, utc: dt.datetime) -> list[Sample]:
        self.date = utc.date()
        self.clock_offset_s = utc.timestamp() - sentence.t_ns / 1e9
        self.clock_readings += 1
        return [self._sample(sentence, "receiver_utc", utc.timestamp(), "s"),
                self._sample(sentence, "clock_offset", self.clock_offset_s, "s")]

    def _on_rmc(self, sentence: Sentence) -> tuple[list[Sample], None]:
        message = sentence.message
        if message.status not in ("A", "V"):
            raise FieldError(f"RMC: status {message.status!r} is not A or V")
        samples = [self._sample(sentence, "rmc_valid", 1.0 if message.status == "A" else 0.0,
                                "")]
        date, time_of_day = message.datestamp, message.timestamp  # each parsed on access
        if isinstance(date, dt.date) and isinstance(time_of_day, dt.time):
            utc = dt.datetime.combine(date, time_of_day)
            samples += self._clock(sentence, utc.replace(tzinfo=dt.UTC))
        return samples, None

    def _on_zda(self, sentence: Sentence) -> tuple[list[Sample], None]:
        message = sentence.message
        try:
            utc = message.datetime
        except (TypeError, ValueError) as error:
            raise FieldError(f"ZDA: bad date or time: {error}") from None
        if not isinstance(message.timestamp, dt.time):
            raise FieldError("ZDA: bad time of day")
        return self._clock(sentence, utc), None

    def _on_gst(self, sentence: Sentence) -> tuple[list[Sample], None]:
        message = sentence.message
        samples = []
        for field, channel in (("std_dev_latitude", "sigma_lat"),
                               ("std_dev_longitude", "sigma_lon"),
                               ("std_dev_altitude", "sigma_alt")):
            value = number_field(message, field, optional=True)
            if value is not None:
                samples.append(self._sample(sentence, channel, value, "m"))
        return samples, None

    def _on_gsa(self, sentence: Sentence) -> tuple[list[Sample], None]:
        message = sentence.message
        samples = []
        for field in ("pdop", "hdop", "vdop"):
            value = number_field(message, field, optional=True)
            if value is not None:
                samples.append(self._sample(sentence, f"gsa_{field}", value, ""))
        return samples, None


def decode_capture(data: bytes) -> tuple[list[Fix], Counter[str]]:
    """Every position fix in a recorded NMEA log, and the decoder's counts."""
    decoder = NmeaDecoder()
    interpreter = GnssInterpreter("capture", decoder.stats)
    fixes = []
    for sentence in decoder.feed(data, 0, 0):
        try:
            _, fix = interpreter.interpret(sentence)
        except Exception as error:  # a capture of anything must decode to its end
            decoder.stats["interpret_error"] += 1
            interpreter.last_error = f"{sentence.raw[:120]}: {type(error).__name__}: {error}"
            continue
        if fix is not None:
            fixes.append(fix)
    decoder.flush()
    return fixes, decoder.stats
