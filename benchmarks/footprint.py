"""The daemon's footprint at nominal load, against a Raspberry-Pi-class budget.

Nominal load (see `footprint_station.py`): four MFCs polled at 10 Hz, a GNSS receiver at
10 Hz, a weather station at 1 Hz, a gas analyzer at 10 lines/s, MQTT telemetry on through
a local mosquitto. The simulators (`crf sim`) and the daemon (`crf daemon`) run in their
own processes, as in the field. Once every device has samples in the store, the daemon is
measured for `--seconds`:

- RSS (VmRSS, sampled every second: the largest and the last) and CPU time (utime +
  stime over the wall time, in % of one core), from /proc;
- samples recorded per second by device (store rows stamped in the window), readings per
  second (polls, epochs, lines) against the configured rate, and readings missed (gaps in
  their stamps);
- samples dropped: each bus consumer's counter (`crf ctl status`, with MQTT) and the
  recorder's (the `daemon.stop` event);
- store growth per hour: the database's pages in use, and its file (the WAL beside it
  fills to its checkpoint size first, so it is shown apart);
- MQTT messages per second the station published.

Targets: RSS under 80 MB, CPU under 5 % of one core, no sample dropped. A benchmark
prints; it does not assert. The simulator and the broker are shown for scale: they share
the machine's cores with the daemon.

    python benchmarks/footprint.py [--seconds 180] [--no-mqtt]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from footprint_station import DEVICES, RATES, STATION, NominalDevice, write_station
from mqtt_latency import free_port, start_broker

from simulators.demo_broker import mosquitto_path

TARGET_RSS_MB = 80.0
TARGET_CPU_PCT = 5.0
READY_TIMEOUT_S = 60.0  # for a child's ready line, and for every device's first samples
STOP_TIMEOUT_S = 60.0  # the daemon zeroes every MFC before it exits
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MB = 1e6  # decimal megabytes: VmRSS is in KiB


class BenchmarkError(Exception):
    """Something the benchmark needs did not happen; the message says what."""


async def ready_or_ended(ready: asyncio.Event, worker: asyncio.Task[None]) -> bool:
    """Wait until `ready` is set, `worker` ends or READY_TIMEOUT_S pass; whether ready."""
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait({waiting, worker}, timeout=READY_TIMEOUT_S,
                       return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    return ready.is_set()


class Child:
    """A `crf` process of ours in its own session, so that Ctrl-C reaches only the
    benchmark, which stops the children in a safe order (the daemon before the simulated
    MFCs it zeroes). Its output is drained; the last lines are kept for errors."""

    def __init__(self, name: str, args: list[str], ready_text: str) -> None:
        self.name = name
        self.args = [sys.executable, "-m", "acquisition.cli", *args]
        self.ready_text = ready_text
        self.tail: deque[str] = deque(maxlen=20)
        self._ready = asyncio.Event()
        self.process: asyncio.subprocess.Process | None = None
        self._draining: asyncio.Task[None] | None = None  # held: the loop keeps weak refs

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        """Start it and return once it printed its ready line."""
        self.process = await asyncio.create_subprocess_exec(
            *self.args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        self._draining = asyncio.create_task(self._drain(), name=f"drain:{self.name}")
        if not await ready_or_ended(self._ready, self._draining):
            raise BenchmarkError(self.failure(f"did not print {self.ready_text!r}"))

    async def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.tail.append(line)
            if self.ready_text in line:
                self._ready.set()

    def failure(self, what: str) -> str:
        return f"{self.name} {what}; its last output:\n" + "\n".join(self.tail)

    async def stop(self) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not end within STOP_TIMEOUT_S."""
        if self.process is None or self.process.returncode is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            print(f"{self.name} ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s: killed",
                  file=sys.stderr)
            self.process.kill()
            return await self.process.wait()


# --- /proc --------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces and ')'
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / MB
    raise BenchmarkError(f"no VmRSS for process {pid}")


# --- the store, read-only as an engineer would ----------------------------------------------

def open_store(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def devices_recorded(path: Path) -> set[str]:
    with contextlib.closing(open_store(path)) as db:
        return {device for (device,) in db.execute(
            "SELECT DISTINCT device FROM channels c"
            " WHERE EXISTS (SELECT 1 FROM samples s WHERE s.channel_id = c.id)")}


@dataclass(frozen=True)
class StoreSize:
    used_bytes: int  # pages in use, WAL content included (what a reader sees)
    db_bytes: int  # the database file on disk
    wal_bytes: int  # its WAL: grows to about 1000 pages, then is reused after checkpoints


def store_size(path: Path) -> StoreSize:
    with contextlib.closing(open_store(path)) as db:
        page_size, = db.execute("PRAGMA page_size").fetchone()
        pages, = db.execute("PRAGMA page_count").fetchone()
        free, = db.execute("PRAGMA freelist_count").fetchone()
    wal = path.with_name(path.name + "-wal")
    return StoreSize((pages - free) * page_size, path.stat().st_size,
                     wal.stat().st_size if wal.exists() else 0)


def samples_in_window(path: Path, t0_ns: int, t1_ns: int) -> dict[tuple[str, str], int]:
    """Rows stamped in [t0, t1) by (device, channel)."""
    with contextlib.closing(open_store(path)) as db:
        rows = db.execute(
            "SELECT c.device, c.channel, count(*) FROM samples s"
            " JOIN channels c ON c.id = s.channel_id"
            " WHERE s.t_ns >= ? AND s.t_ns < ? GROUP BY c.device, c.channel", (t0_ns, t1_ns))
        return {(device, channel): count for device, channel, count in rows}


def missed_readings(path: Path, device: NominalDevice, t0_ns: int, t1_ns: int) -> int:
    """Readings missing between those stamped in [t0, t1): a gap of k periods between two
    readings misses k - 1 of them (a poller that falls behind skips, it does not burst)."""
    with contextlib.closing(open_store(path)) as db:
        stamps = [t_ns for (t_ns,) in db.execute(
            "SELECT s.t_ns FROM samples s JOIN channels c ON c.id = s.channel_id"
            " WHERE c.device = ? AND c.channel = ? AND s.t_ns >= ? AND s.t_ns < ?"
            " ORDER BY s.t_ns", (device.name, device.marker, t0_ns, t1_ns))]
    period_ns = 1e9 / device.rate_hz
    return sum(max(0, round((later - earlier) / period_ns) - 1)
               for earlier, later in itertools.pairwise(stamps))


def stop_event(path: Path) -> dict[str, Any] | None:
    """The detail of the last `daemon.stop` event (samples recorded and dropped)."""
    with contextlib.closing(open_store(path)) as db:
        row = db.execute("SELECT detail FROM events WHERE kind = 'daemon.stop'"
                         " ORDER BY id DESC LIMIT 1").fetchone()
    return json.loads(row[0]) if row else None


async def first_samples(path: Path, daemon: Child) -> None:
    """Return once every device of the station has samples in the store."""
    wanted = {device.name for device in DEVICES}
    deadline = time.monotonic() + READY_TIMEOUT_S
    while (missing := wanted - devices_recorded(path)):
        if time.monotonic() > deadline:
            raise BenchmarkError(daemon.failure(f"recorded nothing of {sorted(missing)}"))
        await asyncio.sleep(0.2)


# --- MQTT -------------------------------------------------------------------------------------

@dataclass
class MqttCounter:
    """Counts what the station publishes while `counting`, by topic kind (telemetry,
    state, status, ...), and the samples the telemetry carries."""

    port: int
    counting: bool = False
    messages: Counter[str] = field(default_factory=Counter)
    telemetry_samples: int = 0
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> asyncio.Task[None]:
        """Subscribe in a task of its own; return the task once subscribed."""
        task = asyncio.create_task(self._count(), name="mqtt counter")
        if not await ready_or_ended(self.subscribed, task):
            task.cancel()
            raise BenchmarkError(f"could not subscribe on the broker at port {self.port}")
        return task

    async def _count(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port) as client:
            await client.subscribe(f"crf/{STATION}/#")
            self.subscribed.set()
            async for message in client.messages:  # until cancelled
                if not self.counting or message.retain:  # retained: sent before the window
                    continue
                kind = str(message.topic).split("/")[2]
                self.messages[kind] += 1
                if kind == "telemetry":
                    payload = json.loads(message.payload)  # type: ignore[arg-type]
                    self.telemetry_samples += len(payload["samples"])


async def station_health(config: Path) -> dict[str, Any] | None:
    """The daemon's health counters, asked for with `crf ctl status` as an operator would;
    None (and why, on stderr) without a reply: the other figures still stand."""
    ctl = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "acquisition.cli", "ctl", "--config", str(config), "status",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await ctl.communicate()
    if ctl.returncode != 0:
        print(f"crf ctl status failed ({ctl.returncode}): {err.decode().strip()}",
              file=sys.stderr)
        return None
    return json.loads(out)["health"]  # type: ignore[no-any-return]


# --- the measurement --------------------------------------------------------------------------

@dataclass
class Window:
    """What was measured over the window, per process where it applies."""

    t0_ns: int
    t1_ns: int = 0
    seconds: float = 0.0
    rss_mb: list[float] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    size0: StoreSize | None = None
    size1: StoreSize | None = None


async def measure(pids: dict[str, int], daemon_pid: int, store: Path,
                  seconds: float, counter: MqttCounter | None) -> Window:
    """Sample the daemon's RSS every second for `seconds`; CPU time of every process."""
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    window = Window(time.time_ns(), size0=store_size(store))
    began = time.monotonic()
    if counter is not None:
        counter.counting = True
    while (left := seconds - (time.monotonic() - began)) > 0:
        window.rss_mb.append(rss_mb(daemon_pid))
        await asyncio.sleep(min(1.0, left))
    if counter is not None:
        counter.counting = False
    window.seconds = time.monotonic() - began
    window.t1_ns = time.time_ns()
    window.rss_mb.append(rss_mb(daemon_pid))
    window.cpu_s = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
    window.size1 = store_size(store)
    return window


# --- the report -------------------------------------------------------------------------------

def verdict(ok: bool) -> str:
    return "ok" if ok else "OVER"


def print_report(window: Window, samples: dict[tuple[str, str], int], missed: dict[str, int],
                 health: dict[str, Any] | None, stopped: dict[str, Any] | None,
                 counter: MqttCounter | None) -> None:
    seconds = window.seconds
    cpu_pct = {name: 100 * cpu / seconds for name, cpu in window.cpu_s.items()}
    peak, last = max(window.rss_mb), window.rss_mb[-1]
    dropped = dict(health["dropped_samples"]) if health else {}
    if stopped is not None:
        dropped["recorder at stop"] = stopped["samples_dropped"]
    print(f"\n{'figure':<34}{'measured':>16}  {'target':>14}")
    print(f"{'daemon RSS, max / last':<34}{f'{peak:.1f} / {last:.1f} MB':>16}  "
          f"{f'< {TARGET_RSS_MB:.0f} MB':>14}  {verdict(peak < TARGET_RSS_MB)}")
    print(f"{'daemon CPU, % of one core':<34}{cpu_pct['daemon']:>15.2f}%  "
          f"{f'< {TARGET_CPU_PCT:.0f} %':>14}  {verdict(cpu_pct['daemon'] < TARGET_CPU_PCT)}")
    for name, count in dropped.items():
        print(f"{f'dropped samples: {name}':<34}{count:>16}  {'0':>14}  {verdict(count == 0)}")
    if not dropped:
        print(f"{'dropped samples':<34}{'(not known)':>16}")
    skipped = sum(missed.values())
    print(f"{'readings missed (see below)':<34}{skipped:>16}  {'0':>14}  {verdict(skipped == 0)}")
    recorded = sum(samples.values())
    assert window.size0 is not None and window.size1 is not None
    per_hour = 3600 / seconds
    used = (window.size1.used_bytes - window.size0.used_bytes) * per_hour / MB
    db_file = (window.size1.db_bytes - window.size0.db_bytes) * per_hour / MB
    print(f"{'samples recorded/s':<34}{recorded / seconds:>16.1f}")
    print(f"{'store growth, pages in use':<34}{f'{used:.1f} MB/h':>16}  "
          f"({used * 24 / 1000:.2f} GB/day, "
          f"{(window.size1.used_bytes - window.size0.used_bytes) / max(recorded, 1):.0f} "
          "B/sample)")
    print(f"{'store growth, database file':<34}{f'{db_file:.1f} MB/h':>16}  "
          f"(WAL {window.size0.wal_bytes / MB:.1f} MB at the start, "
          f"{window.size1.wal_bytes / MB:.1f} MB at the end)")
    if counter is not None:
        total = sum(counter.messages.values())
        kinds = ", ".join(f"{kind} {n / seconds:.1f}" for kind, n in counter.messages.items())
        print(f"{'MQTT messages/s published':<34}{total / seconds:>16.1f}  ({kinds})")
        print(f"{'MQTT telemetry samples/s':<34}{counter.telemetry_samples / seconds:>16.1f}")
    for name in ("simulator", "mosquitto"):
        if name in cpu_pct:
            print(f"{f'{name} CPU (for scale)':<34}{cpu_pct[name]:>15.2f}%")

    print(f"\n{'device':<10}{'rate Hz':>8}{'readings/s':>12}{'missed':>8}{'samples/s':>11}")
    for device in DEVICES:
        readings = samples.get((device.name, device.marker), 0)
        total = sum(n for (name, _), n in samples.items() if name == device.name)
        print(f"{device.name:<10}{device.rate_hz:>8g}{readings / seconds:>12.2f}"
              f"{missed[device.name]:>8}{total / seconds:>11.1f}")
    expected = sum(RATES.values())
    print(f"(missed: a gap of k >= 1.5 periods between two readings counts round(k) - 1: a "
          f"late poll or epoch, skipped, not burst; {expected:g} readings/s expected in all)")


async def footprint(folder: Path, seconds: float, with_mqtt: bool) -> None:
    broker = None
    mqtt_port = free_port()
    config = write_station(folder, f"mqtt://127.0.0.1:{mqtt_port}" if with_mqtt else None,
                           modbus_port=free_port(), analyzer_port=free_port())
    store = folder / f"{STATION}.sqlite"
    simulator = Child("simulator", ["sim", "--config", str(config)], "kill -USR1")
    daemon = Child("daemon", ["daemon", "--config", str(config)], '"acquiring"')
    counter = MqttCounter(mqtt_port) if with_mqtt else None
    listening: asyncio.Task[None] | None = None
    health = None
    try:
        if with_mqtt:
            broker = start_broker(folder, mqtt_port)
        await simulator.start()
        await daemon.start()
        await first_samples(store, daemon)
        if counter is not None:
            listening = await counter.start()
        pids = {"daemon": daemon.pid, "simulator": simulator.pid}
        if broker is not None:
            pids["mosquitto"] = broker.pid
        print(f"measuring for {seconds:.0f} s (load average {os.getloadavg()[0]:.2f}) ...",
              flush=True)
        window = await measure(pids, daemon.pid, store, seconds, counter)
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
        if with_mqtt:
            health = await station_health(config)
    finally:
        if listening is not None:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)
        code = await daemon.stop()
        if code not in (None, 0):
            print(daemon.failure(f"exited with {code}"), file=sys.stderr)
        await simulator.stop()
        if broker is not None:
            broker.terminate()
            broker.wait(10)
    missed = {device.name: missed_readings(store, device, window.t0_ns, window.t1_ns)
              for device in DEVICES}
    print_report(window, samples_in_window(store, window.t0_ns, window.t1_ns), missed, health,
                 stop_event(store), counter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0,
                        help="length of the measurement window (default 180)")
    parser.add_argument("--no-mqtt", action="store_true", help="no broker, no [mqtt] table")
    args = parser.parse_args()
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    with_mqtt = not args.no_mqtt
    if with_mqtt and mosquitto_path() is None:
        print("mosquitto is not installed (apt-get install mosquitto): measuring without MQTT")
        with_mqtt = False
    print(f"crf daemon at nominal load: 4 MFCs at 10 Hz, GNSS 10 Hz, met 1 Hz, analyzer 10 Hz, "
          f"MQTT {'on' if with_mqtt else 'off'} (python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory(prefix="crf-footprint-") as folder:
        try:
            asyncio.run(footprint(Path(folder), args.seconds, with_mqtt))
        except BenchmarkError as error:
            raise SystemExit(f"footprint: {error}") from None
        except KeyboardInterrupt:
            raise SystemExit("footprint: interrupted; daemon, simulator and broker stopped") \
                from None


if __name__ == "__main__":
    main()
