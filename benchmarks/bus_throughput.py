"""Modbus RTU bus throughput: crf-daq's MFC driver against the line's physical ceiling.

Four simulated Alicat MFCs share one paced pty line (the simulator answers at the real
byte timing of the configured baud rate, in its own process). For 19200 and 115200
baud with 11-bit characters (8N2 on the pty: some kernels refuse parity on a
pty; 8E1 has the same timing) it measures, in one run:

- crf-daq: every MFC polled by its driver (all six values in one contiguous read),
  the four pollers running concurrently on the line's lock, as fast as the line allows;
- baseline: a naive sequential pymodbus loop, one register read per value;

and prints transactions/s against the line's theoretical ceiling (see `simulators/pacing.py`),
`1 / ((13 + 2N) Tc + 2 t3.5)`, and values/s against the baseline.

    python benchmarks/bus_throughput.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient

from acquisition.config.station import StationConfig, load_config
from acquisition.logs import configure_logging
from acquisition.samples.devices import build_devices

N_MFCS = 4
BITS_PER_CHAR = 11  # 8E1 or 8N2: start + 8 data + parity or 2nd stop + stop


def char_time(baud: int) -> float:
    return BITS_PER_CHAR / baud


def gap_time(baud: int) -> float:
    return 3.5 * char_time(baud) if baud <= 19200 else 0.00175


def ceiling_tps(baud: int, registers: int) -> float:
    """Transactions/s a perfect master reaches reading `registers` per request."""
    return 1.0 / ((13 + 2 * registers) * char_time(baud) + 2 * gap_time(baud))


def write_config(folder: Path, baud: int) -> Path:
    mfcs = "".join(
        f"""
[mfcs.mfc{unit}]
line = "bus"
unit_id = {unit}
profile = "alicat"
full_scale = 10
"""
        for unit in range(1, N_MFCS + 1)
    )
    path = folder / f"bench-{baud}.toml"
    path.write_text(f"""
station = "bench"
[storage]
path = "bench.sqlite"
[lines.bus]
port = "{folder / f'bus-{baud}'}"
baudrate = {baud}
parity = "N"
stopbits = 2
timeout_s = 0.5
retries = 0
{mfcs}
[sim]
pace = true
""")
    return path


async def measure_driver(config: StationConfig, seconds: float) -> tuple[float, float, int]:
    """(transactions, values, failed polls) with one concurrent poller per MFC."""
    devices = build_devices(config)
    line = devices.lines["bus"]
    stop_at = time.monotonic() + seconds
    counts = {"values": 0, "failed": 0}

    async def poll_forever(mfc) -> None:  # type: ignore[no-untyped-def]
        while time.monotonic() < stop_at:
            samples = await mfc.poll()
            good = sum(1 for s in samples if s.ok)
            counts["values"] += good
            counts["failed"] += good < len(samples)

    for mfc in devices.mfcs.values():  # connect and warm up
        await mfc.poll()
    start = line.transactions
    began = time.monotonic()
    await asyncio.gather(*(poll_forever(mfc) for mfc in devices.mfcs.values()))
    elapsed = time.monotonic() - began
    transactions = line.transactions - start
    devices.close()
    return transactions / elapsed, counts["values"] / elapsed, counts["failed"]


async def measure_baseline(config: StationConfig, seconds: float) -> float:
    """Values/s (= transactions/s) for a naive loop: one read per value, one device at a time."""
    line = config.lines["bus"]
    client = AsyncModbusSerialClient(
        line.port or "", framer=FramerType.RTU, baudrate=line.baudrate, parity=line.parity,
        stopbits=line.stopbits, timeout=0.5, retries=0)
    await client.connect()
    profile = config.mfcs["mfc1"].resolved_profile
    values = 0
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        for mfc in config.mfcs.values():
            for name in profile.poll:
                register = profile.registers[name]
                reply = await client.read_holding_registers(
                    register.address, count=register.width, device_id=mfc.unit_id)
                values += not reply.isError()
    elapsed = time.monotonic() - began
    client.close()
    return values / elapsed


def start_simulator(config_path: Path, port: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "acquisition.cli", "sim", "--config", str(config_path)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not port.exists():
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise SystemExit("simulator did not start")
        time.sleep(0.05)
    return process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    args = parser.parse_args()
    configure_logging("warning")
    print(f"{N_MFCS} simulated Alicat MFCs on one paced pty line, 8N2 (11-bit chars), "
          f"{args.seconds:.0f} s per measurement (python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores)\n")
    header = (f"{'baud':>6}  {'N':>3}  {'ceiling tx/s':>12}  {'crf tx/s':>8}  {'of ceiling':>10}"
              f"  {'crf values/s':>12}  {'naive values/s':>14}  {'speed-up':>8}  failed")
    print(header)
    with tempfile.TemporaryDirectory(prefix="crf-bench-") as folder:
        for baud in (19200, 115200):
            config_path = write_config(Path(folder), baud)
            config = load_config(config_path)
            registers = config.mfcs["mfc1"].resolved_profile.poll_blocks()[0].count
            simulator = start_simulator(config_path, Path(config.lines["bus"].port or ""))
            try:
                tps, vps, failed = asyncio.run(measure_driver(config, args.seconds))
                naive_vps = asyncio.run(measure_baseline(config, args.seconds))
            finally:
                simulator.terminate()
                simulator.wait(10)
            ceiling = ceiling_tps(baud, registers)
            print(f"{baud:>6}  {registers:>3}  {ceiling:>12.1f}  {tps:>8.1f}"
                  f"  {tps / ceiling:>10.1%}  {vps:>12.0f}  {naive_vps:>14.0f}"
                  f"  {vps / naive_vps:>7.2f}x  {failed}")


if __name__ == "__main__":
    main()
