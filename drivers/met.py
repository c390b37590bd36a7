"""Weather station NMEA interpretation: MWV (wind) and MDA (meteorological composite).

Wind is reported in m/s whatever unit the station sends; a relative wind angle (to the
station's own axis) is kept apart from a true direction so that an unaligned mast is
never mistaken for a north-referenced one.
"""

from __future__ import annotations

from collections import Counter

from drivers.nmea import FieldError, Sentence, number_field
from drivers.sample import Sample

TO_M_S = {"M": 1.0, "K": 1 / 3.6, "N": 1852 / 3600, "S": 0.44704}


class MetInterpreter:
    """Turns MWV and MDA sentences into wind, temperature and pressure samples."""

    def __init__(self, device: str, stats: Counter[str]) -> None:
        self.device = device
        self.stats = stats
        self.last_error: str | None = None

    def interpret(self, sentence: Sentence) -> tuple[list[Sample], None]:
        try:
            if sentence.kind == "MWV":
                return self._mwv(sentence), None
            if sentence.kind == "MDA":
                return self._mda(sentence), None
        except FieldError as error:
            self.stats["malformed"] += 1
            self.last_error = str(error)
            return [], None
        self.stats[f"ignored:{sentence.kind}"] += 1
        return [], None

    def _sample(self, sentence: Sentence, channel: str, value: float, unit: str) -> Sample:
        return Sample(sentence.t_ns, sentence.mono_ns, self.device, channel, value, unit)

    def _mwv(self, sentence: Sentence) -> list[Sample]:
        message = sentence.message
        if message.status != "A":
            self.stats["invalid"] += 1
            return []
        unit = str(message.wind_speed_units)
        if unit not in TO_M_S:
            raise FieldError(f"MWV: wind speed unit {unit!r} is not M, K, N or S")
        if message.reference not in ("R", "T"):
            raise FieldError(f"MWV: reference {message.reference!r} is not R or T")
        angle = number_field(message, "wind_angle")
        speed = number_field(message, "wind_speed")
        assert angle is not None and speed is not None
        if not 0 <= angle <= 360 or speed < 0:
            raise FieldError(f"MWV: angle {angle} or speed {speed} out of range")
        channel = "wind_direction" if message.reference == "T" else "wind_angle_relative"
        return [self._sample(sentence, channel, angle % 360, "deg"),
                self._sample(sentence, "wind_speed", speed * TO_M_S[unit], "m/s")]

    def _mda(self, sentence: Sentence) -> list[Sample]:
        message = sentence.message
        samples = []
        bar = number_field(message, "b_pressure_bar", optional=True)
        if bar is not None:
            samples.append(self._sample(sentence, "air_pressure", bar * 1000.0, "hPa"))
        temperature = number_field(message, "air_temp", optional=True)
        if temperature is not None:
            samples.append(self._sample(sentence, "air_temperature", temperature, "degC"))
        direction = number_field(message, "direction_true", optional=True)
        if direction is not None:
            samples.append(self._sample(sentence, "wind_direction", direction % 360, "deg"))
        speed = number_field(message, "wind_speed_meters", optional=True)
        if speed is not None:
            samples.append(self._sample(sentence, "wind_speed", speed, "m/s"))
        return samples
