"""MQTT telemetry through a local mosquitto: sample-to-subscriber latency and throughput.

1. Latency: the daemon polls four simulated MFCs (no pacing) at 20 Hz; a subscriber
   measures, for every sample it receives, its arrival time minus the sample's own
   stamp (taken when the Modbus reply arrived). Telemetry is batched per device, so
   the batching interval dominates: measured at 50 ms and at the default 1 s.
2. Throughput: a synthetic source floods a daemon's sample bus (100 devices x 10
   channels) and the subscriber counts the samples that reach it, against those offered.

    python benchmarks/mqtt_latency.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import aiomqtt
import numpy as np

from acquisition.config.station import StationConfig, load_config
from acquisition.daemon.daemon import Daemon
from acquisition.logs import configure_logging
from drivers.sample import Sample
from simulators.demo_broker import mosquitto_path
from simulators.station import SimStation


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_broker(folder: Path, port: int) -> subprocess.Popen[bytes]:
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    broker = subprocess.Popen([mosquitto_path() or "mosquitto", "-c",
                               str(conf)], stderr=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return broker
        time.sleep(0.05)
    raise SystemExit("mosquitto did not start")


def station(folder: Path, port: int, interval: float) -> StationConfig:
    mfcs = "".join(f"""
[mfcs.mfc{unit}]
line = "bus"
unit_id = {unit}
profile = "alicat"
full_scale = 10
""" for unit in range(1, 5))
    path = folder / f"station-{interval}.toml"
    path.write_text(f"""
station = "bench"
[storage]
path = "bench-{interval}.sqlite"
[acquisition]
sample_rate_hz = 20
[lines.bus]
port = "{folder / f'bus-{interval}'}"
baudrate = 115200
timeout_s = 0.2
{mfcs}
[mqtt]
url = "mqtt://127.0.0.1:{port}"
telemetry_interval_s = {interval}
[sim]
pace = false
""")
    return load_config(path)


async def subscriber(port: int, latencies: list[float], counter: list[int],
                     ready: asyncio.Event) -> None:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe("crf/bench/telemetry/#")
        ready.set()
        async for message in client.messages:
            arrived = time.time_ns()
            samples = json.loads(message.payload)["samples"]  # type: ignore[arg-type]
            counter[0] += len(samples)
            latencies.extend((arrived - t_ns) / 1e6 for _, t_ns, *_ in samples)


async def measure_latency(config: StationConfig, port: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    ready = asyncio.Event()
    async with SimStation(config):
        daemon = Daemon(config)
        stop = asyncio.Event()
        listening = asyncio.create_task(subscriber(port, latencies, [0], ready))
        await ready.wait()
        running = asyncio.create_task(daemon.run(stop))
        await daemon.ready.wait()
        await asyncio.sleep(seconds)
        stop.set()
        await running
        listening.cancel()
    return latencies


async def measure_throughput(folder: Path, port: int, seconds: float
                             ) -> tuple[float, float]:
    """(offered, delivered) samples per second through the daemon's MQTT link."""
    path = folder / "flood.toml"
    path.write_text(f"""
station = "bench"
[storage]
path = "flood.sqlite"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
telemetry_interval_s = 0.2
""")
    daemon = Daemon(load_config(path))  # no devices: the flood is the only source
    received = [0]
    ready = asyncio.Event()
    listening = asyncio.create_task(subscriber(port, [], received, ready))
    await ready.wait()
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(stop))
    await daemon.ready.wait()
    offered = 0
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        t_ns, mono = time.time_ns(), time.monotonic_ns()
        batch = [Sample(t_ns, mono, f"dev{d}", f"ch{c}", 1.0, "u")
                 for d in range(100) for c in range(10)]
        daemon.bus.publish(batch)
        offered += len(batch)
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - began
    await asyncio.sleep(1.0)  # the last batches on their way
    stop.set()
    await running
    listening.cancel()
    await asyncio.gather(listening, return_exceptions=True)
    return offered / elapsed, received[0] / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    configure_logging("error")
    with tempfile.TemporaryDirectory(prefix="crf-mqtt-bench-") as name:
        folder = Path(name)
        port = free_port()
        broker = start_broker(folder, port)
        try:
            print(f"local mosquitto, 4 simulated MFCs at 20 Hz, {args.seconds:.0f} s each\n")
            print(f"{'batch interval':>14}  {'samples':>8}  {'p50 ms':>8}  {'p99 ms':>8}  "
                  f"{'max ms':>8}")
            for interval in (0.05, 1.0):
                config = station(folder, port, interval)
                latencies = np.array(asyncio.run(measure_latency(config, port, args.seconds)))
                print(f"{interval:>12} s  {latencies.size:>8}  "
                      f"{np.percentile(latencies, 50):>8.1f}  "
                      f"{np.percentile(latencies, 99):>8.1f}  {latencies.max():>8.1f}")
            offered, delivered = asyncio.run(measure_throughput(folder, port, args.seconds))
            print(f"\nthroughput, 100 devices x 10 channels flooding the bus: offered "
                  f"{offered:,.0f} samples/s, delivered {delivered:,.0f} samples/s "
                  f"({delivered / offered:.0%})")
        finally:
            broker.terminate()
            broker.wait(10)


if __name__ == "__main__":
    main()
