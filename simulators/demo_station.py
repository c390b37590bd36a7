"""The station `crf demo` runs: its own copy of the simulated station file and of the
sequence, written into the demo's output directory.

The copy keeps every comment of the original (a newcomer reads it beside the logs) and
moves into the directory what two demos, or a demo and a test, would otherwise share:
the run store, the serial ports (ptys, as paths relative to the directory, which is the
simulator's and the daemon's working directory, so the directory can be renamed once they
have stopped), the TCP ports of the simulated devices (free ones) and the broker (the
demo's own, on its port and protocol).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from acquisition.config.station import ConfigError, StationConfig, load_config
from acquisition.run.sequence import Plan, load_sequence
from simulators.demo_broker import BrokerPlan

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config"
SIM_STATION = REPO_CONFIG / "sim.toml"
STATION_FILE = "station.toml"
STORE_FILE = "store.sqlite"
PORTS_DIR = "dev"  # the ptys, relative to the output directory

_TABLE = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]")
_KEY = re.compile(r"^(?P<key>[A-Za-z0-9_-]+)(?P<eq>\s*=\s*)(?P<value>\"[^\"]*\"|[^\s#]+)"
                  r"(?P<rest>.*)$")


class StationCopyError(Exception):
    """The simulated station could not be copied for the demo (the message says why)."""


def _rewritten(table: str, key: str, value: str, broker: BrokerPlan,
               free_port: Callable[[], int]) -> list[str] | None:
    """The line(s) `key = ...` of `table` becomes, or None to keep it as it is."""
    if key == "port" and value.startswith('"'):
        return [f'"{PORTS_DIR}/{Path(value.strip(chr(34))).name}"']
    if key == "tcp_port":
        return [str(free_port())]
    if table == "storage" and key == "path":
        return [f'"{STORE_FILE}"']
    if table == "mqtt" and key == "url":
        return [f'"{broker.url}"', f'protocol = "{broker.protocol}"']
    if table == "mqtt" and key == "protocol":
        return []  # written with the url: the broker decides it
    return None


def station_text(source: str, broker: BrokerPlan, free_port: Callable[[], int]) -> str:
    """`source` (a station file) with its store, ports and broker moved for the demo."""
    lines = ["# Written by `crf demo` from config/sim.toml: the store, the serial ports (paths",
             "# relative to this directory), the TCP ports and the broker are the demo's own.",
             ""]
    table = ""
    for line in source.splitlines():
        if header := _TABLE.match(line):
            table = header.group(1)
        elif (match := _KEY.match(line)) is not None and (new := _rewritten(
                table, match["key"], match["value"], broker, free_port)) is not None:
            lines += [f"{match['key']}{match['eq']}{new[0]}{match['rest']}", *new[1:]]
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


def _endpoints(doc: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """(key path, value) of every `port` and `tcp_port` in a parsed station file."""
    for key, value in doc.items():
        if isinstance(value, dict):
            yield from _endpoints(value, (*path, key))
        elif key in ("port", "tcp_port"):
            yield ".".join((*path, key)), value


def _not_moved(text: str, config: StationConfig, workdir: Path, broker: BrokerPlan,
               tcp_ports: set[int]) -> list[str]:
    """What the copy still shares with the original (a key the rewrite did not catch)."""
    problems = [f"{key} = {value!r}" for key, value in _endpoints(tomllib.loads(text))
                if not (str(value).startswith(f"{PORTS_DIR}/") or value in tcp_ports)]
    if config.storage.path != (workdir / STORE_FILE).resolve():
        problems.append(f"storage.path = {config.storage.path}")
    if config.mqtt is None or (config.mqtt.url, config.mqtt.protocol) != (broker.url,
                                                                         broker.protocol):
        problems.append("[mqtt] url / protocol")
    return problems


def write_station(workdir: Path, broker: BrokerPlan, free_port: Callable[[], int],
                  source: Path = SIM_STATION) -> tuple[Path, StationConfig]:
    """Write the demo's station file into `workdir`; its path and the loaded config.
    Raises StationCopyError if it does not load or still shares anything with `source`."""
    try:
        original = source.read_text(encoding="utf-8")
    except OSError as error:
        raise StationCopyError(f"cannot read {source}: {error.strerror}") from None
    allocated: set[int] = set()

    def allocate() -> int:
        allocated.add(port := free_port())
        return port

    text = station_text(original, broker, allocate)
    path = workdir / STATION_FILE
    path.write_text(text, encoding="utf-8")
    try:
        config = load_config(path)
    except ConfigError as error:
        raise StationCopyError(f"the demo's copy of {source} does not load:\n{error}") from None
    if problems := _not_moved(text, config, workdir, broker, allocated):
        raise StationCopyError(f"{source}: not moved into the demo's directory: "
                               f"{', '.join(problems)}")
    return path, config


def write_sequence(config: StationConfig, name: str, blind: bool,
                   source_dir: Path = REPO_CONFIG / "sequences") -> Plan:
    """Copy sequence `name` beside the demo's station file (as a single-blind run with
    `blind`); its plan as the daemon will run it. Raises StationCopyError if unfit."""
    source = source_dir / f"{name}.toml"
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as error:
        raise StationCopyError(f"cannot read {source}: {error.strerror}") from None
    if blind:  # a top-level key, so before every table
        text = "blind = true                  # crf demo --blind\n" + text
    config.sequences_dir.mkdir(parents=True, exist_ok=True)
    (config.sequences_dir / source.name).write_text(text, encoding="utf-8")
    try:
        plan = load_sequence(name, config)
    except ConfigError as error:
        raise StationCopyError(f"sequence {source} does not fit the station:\n{error}") from None
    if plan.spec.blind != blind:
        raise StationCopyError(f"{source}: sets `blind` itself; crf demo decides it")
    return plan
