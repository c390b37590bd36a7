"""Gas analyzers in the running daemon: a capture file, a TCP stream that drops and comes
back, and a Modbus analyzer polled through the simulator. Their samples are recorded with
their units and the analyzers' own time stamps; rejected lines are counted by kind in
health and logged sparingly; nothing an analyzer sends stops the reader or the daemon."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import structlog

from acquisition.config.station import StationConfig
from acquisition.config.tables import TextAnalyzerConfig
from acquisition.daemon.daemon import Daemon
from acquisition.samples.bus import SampleBus, Subscription
from acquisition.site import analyzer_reader
from acquisition.site.analyzer_reader import AnalyzerReader
from acquisition.site.stream_reader import LOG_EVERY_S
from drivers.analyzer import Reading
from drivers.sample import Sample
from simulators.station import SimStation
from tests.stations import store_rows


def reader_of(tmp_path: Path, **settings: object) -> tuple[AnalyzerReader, Subscription]:
    config = TextAnalyzerConfig.model_validate({
        "transport": "file", "path": tmp_path / "unused", "format": "keyvalue",
        "pair_separator": "whitespace", "channels": {"ch4": "ppm"}, **settings})
    bus = SampleBus()
    published = bus.subscribe("test")
    return AnalyzerReader("ch4_1", config, bus), published


def test_rejected_lines_are_counted_and_logged_once_a_minute_by_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, published = reader_of(tmp_path)
    clock = [0.0]  # the monotonic clock, seconds
    monkeypatch.setattr(analyzer_reader, "now_stamps", lambda: (7, int(clock[0] * 1e9)))
    real_parse = reader.decoder.parser.parse

    def parse(line: bytes) -> Reading:  # a parser bug meeting a line nobody foresaw
        if line.startswith(b"bug"):
            raise ZeroDivisionError("bug " * 50)
        return real_parse(line)

    monkeypatch.setattr(reader.decoder.parser, "parse", parse)
    with structlog.testing.capture_logs() as logs:
        for at in (0.0, 1.0, 2.0, LOG_EVERY_S + 0.5):
            clock[0] = at
            reader.feed(b"ch4=2.0\r\nch4=oops\r\nch4=2.1 ch4=2.2\r\n")
        reader.feed(b"bug\r\nch4=2.3\r\n")  # the line after the failing one still counts
    assert [(line["kind"], line["not_logged_before"]) for line in logs] == [
        ("not_a_number", 0), ("bad_pair", 0), ("not_a_number", 2), ("bad_pair", 2),
        ("internal_error", 0)]
    assert logs[0]["line"] == "b'ch4=oops'" and logs[0]["device"] == "ch4_1"
    assert "exc_info" not in logs[0] and isinstance(logs[-1]["exc_info"], ZeroDivisionError)
    assert len(logs[-1]["error"]) == analyzer_reader.LOGGED_CHARS
    health = reader.health()
    json.dumps(health)
    assert health == {"connected": False, "reconnects": 0, "lines": 5,
                      "rejected": {"bad_pair": 4, "internal_error": 1, "not_a_number": 4},
                      "last_error": "internal_error: ZeroDivisionError: " + "bug " * 50}
    batches = [published.queue.get_nowait() for _ in range(published.queue.qsize())]
    assert [[s.value for s in batch] for batch in batches] == [[2.0]] * 4 + [[2.3]]
    assert {(s.t_ns, s.unit) for batch in batches for s in batch} == {(7, "ppm")}


# --- in the daemon -------------------------------------------------------------------

T0 = dt.datetime(2026, 11, 24, 8, 15, 0, 250000, tzinfo=dt.UTC)
T0_NS = int(T0.timestamp()) * 10**9 + 250_000_000
CAPTURE = (b"# CH4 analyzer beside P1, 2026-11-24 (an annotation of the capture)\r\n"
           b"2026-11-24T08:15:00.250Z,2.013,415.2,1.25,OK\r\n"
           b"2026-11-24T08:15:01.250Z,2.021,415.3,1.25,OK\r\n"
           b"2026-11-24T08:15:02.250Z,2.019,415.1,1.26\r\n"  # a column short
           b"2026-11-24T08:15:03.250Z,---,415.1,1.26,WARMUP\r\n"
           b"2026-11-24 08:15:04.250,2.030,415.0,1.27,OK\r\n"  # no offset, no zone configured
           b"\xb5\x62\x01\x07\x5c\x00\xff\r\n"  # a binary frame on the same port
           b"2026-11-24T08:15:05.250Z,2.040,415.0,1.27,OK\r\n"
           b"2026-11-24T08:15:06.250Z,2.0")  # the capture ends in the middle of a line
CAPTURED = {"ch4": [2.013, 2.021, 2.040], "co2": [415.2, 415.3, 415.0], "h2o": [1.25, 1.25, 1.27]}


def analyzers_toml(capture: Path, tcp_port: int) -> str:
    return f"""
[analyzers.ch4_file]
transport = "file"
path = "{capture}"
format = "delimited"
delimiter = ","
columns = ["time", "ch4", "co2", "h2o", ""]
channels = {{ ch4 = "ppm", co2 = "ppm", h2o = "%" }}
timestamp = {{ field = "time", format = "iso" }}
[analyzers.ch4_tcp]
transport = "tcp"
host = "127.0.0.1"
tcp_port = {tcp_port}
reconnect_min_s = 0.1
reconnect_max_s = 0.2
format = "keyvalue"
pair_separator = "whitespace"
channels = {{ ch4 = "ppm" }}
timestamp = {{ field = "t", format = "epoch_ms" }}
[analyzers.ch4_modbus]
protocol = "modbus"
line = "bus0"
unit_id = 12
"""


async def until_published(subscription: Subscription,
                          seen: Callable[[Sequence[Sample]], bool]) -> None:
    """Until a batch on the bus makes `seen(batch)` true (it gets every batch, in order)."""
    async with asyncio.timeout(10):
        while not seen(await subscription.queue.get()):
            pass


async def test_the_daemon_records_analyzers_from_a_file_tcp_and_modbus(
    make_config: Callable[..., StationConfig], tmp_path: Path
) -> None:
    capture = tmp_path / "ch4.csv"
    capture.write_bytes(CAPTURE)
    connections: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()
    server = await asyncio.start_server(lambda _r, w: connections.put_nowait(w), "127.0.0.1", 0)
    config = make_config(extra=analyzers_toml(capture, server.sockets[0].getsockname()[1]))
    t_ms = time.time_ns() // 10**6  # the TCP analyzer's clock: now, to the millisecond
    heard: Counter[tuple[str, str]] = Counter()  # samples published, by device and channel

    def hearing(done: Callable[[], bool]) -> Callable[[Sequence[Sample]], bool]:
        def seen(batch: Sequence[Sample]) -> bool:
            heard.update((s.device, s.channel) for s in batch)
            return done()
        return seen

    async with server, SimStation(config):
        daemon = Daemon(config)
        published = daemon.bus.subscribe("test")  # before the daemon runs: every batch
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop), name="daemon-under-test")
        await asyncio.wait_for(daemon.ready.wait(), 10)
        writer = await asyncio.wait_for(connections.get(), 10)
        writer.write(b"t=%d ch4=2.10\r\nt=%d ch4=oops\r\nt=%d ch4=2.11 co2=415\r\nt=%d ch4=2"
                     % (t_ms, t_ms + 1000, t_ms + 2000, t_ms + 3000))
        await until_published(published, hearing(lambda: heard["ch4_tcp", "ch4"] == 2))
        writer.close()  # the analyzer drops the link in the middle of a line
        writer = await asyncio.wait_for(connections.get(), 10)  # the reader came back
        writer.write(b"t=%d ch4=2.12\r\n" % (t_ms + 4000))
        await until_published(published, hearing(lambda: (
            heard["ch4_tcp", "ch4"] == 3 and heard["ch4_file", "h2o"] == 3
            and heard["ch4_modbus", "ch4"] > 0)))
        file_reader = {t for t in asyncio.all_tasks() if t.get_name() == "read:ch4_file"}
        if file_reader:  # still running: until it has read the capture to its end
            await asyncio.wait(file_reader, timeout=10)
        health = await daemon.health()
        assert not task.done()  # the daemon runs on without the file's reader
        writer.close()
        stop.set()
        await asyncio.wait_for(task, 30)

    streams = health["streams"]
    assert streams["ch4_file"] == {
        "connected": False, "reconnects": 0, "lines": 3,
        "rejected": {"bad_timestamp": 1, "binary": 1, "columns": 1, "comments": 1,
                     "not_a_number": 1, "truncated": 1},
        "last_error": "binary: not UTF-8 text"}
    assert streams["ch4_tcp"] == {
        "connected": True, "reconnects": 1, "lines": 3,
        "rejected": {"not_a_number": 1, "truncated": 1},
        "last_error": "not_a_number: ch4 = 'oops' is not a finite number"}
    assert health["devices"]["ch4_modbus"]["fault"] is None
    assert "ch4_modbus" not in streams

    def stored(device: str) -> list[tuple[str, int, float, str, str]]:
        return store_rows(config, "SELECT channel, t_ns, value, unit, quality FROM samples_v "
                                  "WHERE device = ? ORDER BY channel, t_ns", device)

    seconds = [0, 1, 5]
    assert stored("ch4_file") == [
        (channel, T0_NS + k * 10**9, value, "%" if channel == "h2o" else "ppm", "ok")
        for channel, values in sorted(CAPTURED.items())
        for k, value in zip(seconds, values, strict=True)]
    assert stored("ch4_tcp") == [("ch4", (t_ms + k * 1000) * 10**6, value, "ppm", "ok")
                                 for k, value in ((0, 2.10), (2, 2.11), (4, 2.12))]
    polled = {(channel, value, unit) for channel, _, value, unit, _ in stored("ch4_modbus")}
    assert polled == {("ch4", 2.0, "ppm"), ("co2", 420.0, "ppm"), ("h2o", 1.0, "%")}
