"""Every number of a station config and of a sequence is finite: TOML's inf and nan are
refused with the key that holds them, since `gt=0` alone lets `inf` through (and an
infinite full scale turned a 1000 kg/h step into 25,384 SLPM on a 100 SLPM MFC)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from acquisition.config.station import ConfigError, StationConfig, load_config
from acquisition.run.sequence import SequenceSpec, load_sequence
from tests.stations import write_station

# A station with every table that holds a float, each float given.
FULL = """
[mfcs.alicat]
gas_mode = "gcf"
gcf = 0.72
reference_temperature_c = 25.0
reference_pressure_kpa = 101.325
certificate_u_pct = 0.5
certificate_k = 2.0
accuracy_pct_reading = 0.8
accuracy_pct_fs = 0.2
gcf_u_pct = 2.0
calibration = [[1.0, 1.01], [5.0, 5.02]]
accurate_span = [0.1, 1.0]
[valves.V1]
line = "bus0"
unit_id = 9
[release_points.P1]
mfcs = ["alicat"]
valve = "V1"
max_rate = 0.5
latitude = 34.75
longitude = 113.63
altitude_m = 110.0
horizontal_uncertainty_m = 0.02
[release_points.P2]
mfcs = ["bronkhorst"]
survey = { receiver = "rx", window_s = 30.0 }
[gnss.rx]
transport = "tcp"
host = "127.0.0.1"
tcp_port = 2947
fix_timeout_s = 3.0
reconnect_min_s = 0.2
reconnect_max_s = 5.0
[met.ws]
transport = "tcp"
host = "127.0.0.1"
tcp_port = 10110
reconnect_min_s = 0.2
reconnect_max_s = 5.0
[analyzers.ch4]
transport = "tcp"
host = "127.0.0.1"
tcp_port = 10111
reconnect_min_s = 0.2
reconnect_max_s = 5.0
format = "delimited"
delimiter = ","
columns = ["time", "ch4"]
channels = { ch4 = "ppm" }
timestamp = { field = "time", format = "epoch" }
[clock]
max_offset_s = 0.5
[gas]
purity = 0.999
purity_u = 0.0005
reference_u_pct = 0.05
[safety]
max_manual_duration_s = 600.0
check_period_s = 0.5
resume_after_s = 30.0
position_wait_s = 120.0
comm_loss = { after_s = 5.0 }
supply_pressure = { device = "alicat", channel = "pressure", min = 150.0, max = 400.0 }
wind = { device = "ws", channel = "wind_speed", min = 0.5, max = 8.0, stale_after_s = 10.0 }
[dut.lidar1]
reporting_delay_s = 30.0
min_overlap = 0.5
wind_run_m = 200.0
wind_device = "ws"
[mqtt]
telemetry_interval_s = 1.0
state_interval_s = 1.0
status_interval_s = 10.0
command_ttl_s = 30.0
max_clock_skew_s = 5.0
reconnect_min_s = 0.5
reconnect_max_s = 30.0
[certificate.conditions]
device = "ws"
temperature_c = { min = -10.0, max = 40.0 }
pressure_kpa = { min = 80.0, max = 110.0 }
wind_speed_m_s = { min = 0.5, max = 8.0 }
wind_sector_deg = [200.0, 340.0]
"""

SEQUENCE = {
    "name": "full",
    "defaults": {"settle_tolerance_pct": 2.0, "settle_window_s": 10.0,
                 "settle_timeout_s": 120.0, "hold_s": 60.0},
    "steps": [{"point": "P1", "rate": 0.1, "unit": "kg/h", "settle_tolerance_pct": 3.0,
               "settle_window_s": 5.0, "settle_timeout_s": 60.0, "hold_s": 30.0}],
}

# One key per float field of every table (a new field must be added: see the last tests).
CONFIG_KEYS = [
    "acquisition.sample_rate_hz", "acquisition.commit_interval_s",
    "acquisition.zero_timeout_s",
    "lines.bus0.timeout_s", "lines.bus0.reconnect_min_s", "lines.bus0.reconnect_max_s",
    "mfcs.alicat.full_scale", "mfcs.alicat.gcf", "mfcs.alicat.reference_temperature_c",
    "mfcs.alicat.reference_pressure_kpa", "mfcs.alicat.certificate_u_pct",
    "mfcs.alicat.certificate_k", "mfcs.alicat.accuracy_pct_reading",
    "mfcs.alicat.accuracy_pct_fs", "mfcs.alicat.gcf_u_pct", "mfcs.alicat.calibration",
    "mfcs.alicat.accurate_span",
    "gnss.rx.fix_timeout_s", "gnss.rx.reconnect_min_s", "gnss.rx.reconnect_max_s",
    "met.ws.reconnect_min_s", "met.ws.reconnect_max_s",
    "analyzers.ch4.reconnect_min_s", "analyzers.ch4.reconnect_max_s",
    "release_points.P1.max_rate", "release_points.P1.latitude", "release_points.P1.longitude",
    "release_points.P1.altitude_m", "release_points.P1.horizontal_uncertainty_m",
    "release_points.P2.survey.window_s",
    "clock.max_offset_s",
    "gas.purity", "gas.purity_u", "gas.reference_u_pct",
    "safety.comm_loss.after_s", "safety.supply_pressure.min", "safety.supply_pressure.max",
    "safety.wind.min", "safety.wind.max", "safety.wind.stale_after_s",
    "safety.max_manual_duration_s", "safety.check_period_s", "safety.resume_after_s",
    "safety.position_wait_s", "safety.safe_retry_s", "safety.safe_wait_s",
    "dut.lidar1.reporting_delay_s", "dut.lidar1.min_overlap", "dut.lidar1.wind_run_m",
    "mqtt.telemetry_interval_s", "mqtt.state_interval_s", "mqtt.status_interval_s",
    "mqtt.command_ttl_s",
    "mqtt.max_clock_skew_s", "mqtt.reconnect_min_s", "mqtt.reconnect_max_s",
    "certificate.conditions.temperature_c.min", "certificate.conditions.temperature_c.max",
    "certificate.conditions.wind_sector_deg",
]
SEQUENCE_KEYS = [
    "defaults.settle_tolerance_pct", "defaults.settle_window_s", "defaults.settle_timeout_s",
    "defaults.hold_s",
    "steps.0.rate", "steps.0.settle_tolerance_pct", "steps.0.settle_window_s",
    "steps.0.settle_timeout_s", "steps.0.hold_s",
]
# TOML spellings of non-finite floats, and how the message shows each.
SPELLINGS = [("inf", "inf"), ("+inf", "inf"), ("-inf", "-inf"), ("nan", "nan")]


class Raw(str):
    """A TOML literal written as it is (`inf`, `nan`): json has no spelling for them."""


# Keys that hold lists of floats: where the bad number goes, and the key path shown.
LISTS: dict[str, tuple[Callable[[Raw], list[Any]], str]] = {
    "calibration": (lambda bad: [[1.0, 1.01], [5.0, bad]], ".1.1"),
    "accurate_span": (lambda bad: [0.1, bad], ".1"),
    "wind_sector_deg": (lambda bad: [200.0, bad], ".1"),
}


def toml_value(value: object) -> str:
    """A value as TOML text, tables inline (enough for these files)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    assert isinstance(value, dict), value
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_doc(doc: dict[str, Any]) -> str:
    return "\n".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc.items())


def with_bad(doc: dict[str, Any], key: str, literal: str) -> tuple[str, str]:
    """The document as TOML with `literal` at `key`, and the key path the error names."""
    *parents, last = key.split(".")
    table: Any = doc
    for part in parents:
        table = table[int(part)] if isinstance(table, list) else table[part]
    shape, where = LISTS.get(last, (lambda bad: bad, ""))
    table[last] = shape(Raw(literal))
    return toml_doc(doc), key + where


def full_station(tmp_path: Path) -> Path:
    """write_station's file with FULL merged in (tables it already has are extended)."""
    path = write_station(tmp_path)
    doc = tomllib.loads(path.read_text())
    for name, table in tomllib.loads(FULL).items():
        for key, value in table.items():
            if isinstance(value, dict) and isinstance(doc.get(name, {}).get(key), dict):
                doc[name][key] |= value
            else:
                doc.setdefault(name, {})[key] = value
    path.write_text(toml_doc(doc))
    return path


def test_the_full_station_and_sequence_are_valid(tmp_path: Path) -> None:
    config = load_config(full_station(tmp_path))
    assert config.mfcs["alicat"].calibration == [(1.0, 1.01), (5.0, 5.02)]
    sequence = tmp_path / "full.toml"
    sequence.write_text(toml_doc(SEQUENCE))
    assert load_sequence(str(sequence), config).steps[0].timing.hold_s == 30.0


@pytest.mark.parametrize(("literal", "shown"), SPELLINGS)
@pytest.mark.parametrize("key", CONFIG_KEYS)
def test_station_float_must_be_finite(tmp_path: Path, key: str, literal: str,
                                      shown: str) -> None:
    path = full_station(tmp_path)
    text, named = with_bad(tomllib.loads(path.read_text()), key, literal)
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [(named, f"Input should be a finite number (got {shown})")]


@pytest.mark.parametrize(("literal", "shown"), SPELLINGS)
@pytest.mark.parametrize("key", SEQUENCE_KEYS)
def test_sequence_float_must_be_finite(tmp_path: Path, key: str, literal: str,
                                       shown: str) -> None:
    config = load_config(full_station(tmp_path))
    sequence = tmp_path / "bad.toml"
    text, named = with_bad(copy.deepcopy(SEQUENCE), key, literal)
    sequence.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_sequence(str(sequence), config)
    assert caught.value.path == sequence
    assert caught.value.problems == [(named, f"Input should be a finite number (got {shown})")]


@pytest.mark.parametrize(("key", "literal", "shown"), [
    ("mfcs.alicat.full_scale", "inf", "inf"),
    ("release_points.P1.max_rate", "+inf", "inf"),
    ("safety.wind.min", "-inf", "-inf"),
    ("mfcs.alicat.calibration", "nan", "nan"),
])
def test_check_config_refuses_and_names_the_key(tmp_path: Path, key: str, literal: str,
                                                shown: str) -> None:
    path = full_station(tmp_path)
    text, named = with_bad(tomllib.loads(path.read_text()), key, literal)
    path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "acquisition.cli", "check-config", str(path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert f"{path}: {named}: Input should be a finite number (got {shown})" in result.stderr


def float_fields(model: type[BaseModel], seen: set[type] | None = None) -> set[tuple[str, str]]:
    """(model, field) of every float, list or tuple of floats reachable from `model`."""
    seen = seen if seen is not None else set()
    seen.add(model)
    found: set[tuple[str, str]] = set()
    for name, field in model.model_fields.items():
        for kind in _flatten(field.annotation):
            if kind is float:
                found.add((model.__name__, name))
            elif isinstance(kind, type) and issubclass(kind, BaseModel) and kind not in seen:
                found |= float_fields(kind, seen)
    return found


def _flatten(annotation: object) -> Iterator[object]:
    yield annotation
    for arg in get_args(annotation):
        yield from _flatten(arg)


def fields_of(root: BaseModel, keys: list[str]) -> set[tuple[str, str]]:
    """(model, field) that each key path reaches in a loaded config or sequence."""
    found = set()
    for key in keys:
        *parents, last = key.split(".")
        node: Any = root
        for part in parents:
            node = (node[int(part)] if isinstance(node, list) else
                    node[part] if isinstance(node, dict) else getattr(node, part))
        found.add((type(node).__name__, last))
    return found


def test_every_float_of_a_station_is_in_the_table(tmp_path: Path) -> None:
    config = load_config(full_station(tmp_path))
    assert float_fields(StationConfig) <= fields_of(config, CONFIG_KEYS)


def test_every_float_of_a_sequence_is_in_the_table() -> None:
    spec = SequenceSpec.model_validate(SEQUENCE)
    assert float_fields(SequenceSpec) <= fields_of(spec, SEQUENCE_KEYS)
