"""Which MFC releases a given rate: the one whose range puts the setpoint highest within
its accurate span (a controller is most accurate near the top of its range)."""

from __future__ import annotations

from dataclasses import dataclass

from acquisition.config.station import StationConfig


@dataclass(frozen=True)
class Assignment:
    mfc: str
    setpoint: float  # in the MFC's flow unit (standard flow at its reference conditions)
    fraction_of_fs: float
    qc_flags: tuple[str, ...] = ()


def choose_mfc(config: StationConfig, point: str, kg_h: float) -> Assignment:
    """The MFC of `point` for `kg_h`; a blank step gets the smallest MFC at zero, so its
    readback still measures what (if anything) flows."""
    names = config.release_points[point].mfcs
    if not names:
        raise ValueError(f"release point '{point}' has no MFCs")
    if kg_h == 0:
        smallest = min(names, key=lambda name: config.mfcs[name].full_scale)
        return Assignment(smallest, 0.0, 0.0)
    fitting = []
    for name in names:
        setpoint = config.conversion(name).setpoint_for(kg_h)
        fraction = setpoint / config.mfcs[name].full_scale
        low, high = config.mfcs[name].accurate_span
        if fraction <= min(high, 1.0):
            fitting.append((fraction >= low, fraction, name, setpoint))
    if not fitting:
        raise ValueError(f"{kg_h:.4g} kg/h is beyond every MFC of point '{point}'")
    in_span, fraction, name, setpoint = max(fitting)
    return Assignment(name, setpoint, fraction, () if in_span else ("below_accurate_span",))
