"""`crf demo`: a whole calibration on the simulated station, from a cold start to a
certificate, with no hardware and no root.

It starts an MQTT broker (simulators/demo_broker.py), the simulated station (`crf sim`:
MFCs, valves, GNSS receiver, weather station, gas analyzer, and a DUT reporting over
MQTT) and the daemon (`crf daemon`), each as its own process, in a directory of its own
(simulators/demo_station.py); starts a short sequence with repeats over MQTT as an
operator would (`crf ctl start`) and shows its progress as `crf ctl watch` does; then
stops everything, the daemon first (it zeroes the MFCs), reads back over Modbus that the
simulated MFCs are at zero, and writes the report with `crf report`. Ctrl-C or SIGTERM
stops everything the same way, without a report.

The simulated DUT reads the run events (`run/+/event`), which the shipped broker ACL
gives no DUT account: the demo's broker is anonymous and bound to 127.0.0.1, which is
fine for a rehearsal on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

import aiomqtt

from acquisition.config.station import StationConfig
from acquisition.daemon.daemon import stop_budget_s
from acquisition.exit_codes import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_UNSAFE
from acquisition.logs import configure_logging
from acquisition.mqtt.client import make_client
from acquisition.run.sequence import Plan
from acquisition.run.state import State
from simulators.demo_broker import BROKERS, HOST, BrokerChoiceError, BrokerPlan, plan_broker
from simulators.demo_broker import free_port as any_free_port
from simulators.demo_children import Child, ChildFailedError, Children, log_tail
from simulators.demo_safety import check_safe
from simulators.demo_station import StationCopyError, write_sequence, write_station
from simulators.demo_watch import StationWatch

CRF = [sys.executable, "-m", "acquisition.cli"]
SEQUENCE = "demo-calibration"
QUICK_SEQUENCE = "demo-calibration-quick"
OUTPUT_ROOT = Path("demo-output")
REPORT_DIR = "report"
OPERATOR = "crf demo"
SIM_READY = "kill -USR1"  # what `crf sim` prints once it serves every device
READY_TIMEOUT_S = 30.0  # for the broker, the simulator, the daemon online
COMMAND_TIMEOUT_S = 30.0  # `crf ctl start`
REPORT_TIMEOUT_S = 180.0  # `crf report`: plots and two PDFs
DUT_REPORTS_WAIT_S = 15.0  # after the run: for the DUT's report of the last hold
T = TypeVar("T")


class DemoError(Exception):
    """The demo cannot go on (the message says why)."""


@dataclass
class Demo:
    """One demo: where it works, what it runs, and what it has learned so far."""

    workdir: Path
    named_by_run: bool  # the default output: renamed to the run id at the end
    broker: BrokerPlan
    station_path: Path
    config: StationConfig
    plan: Plan
    run_id: str | None = None
    final_state: str | None = None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `demo` command to the `crf` parser (entry point `crf.commands`)."""
    parser = subparsers.add_parser(
        "demo", help="run a whole simulated calibration, from a cold start to a certificate "
                     "(no hardware, no root)")
    parser.add_argument("--out", help=f"output directory (default {OUTPUT_ROOT}/<run id>/)")
    parser.add_argument("--quick", action="store_true",
                        help="short holds: under a minute (for CI)")
    parser.add_argument("--blind", action="store_true",
                        help="a single-blind run: public topics show no rate until it ends")
    parser.add_argument("--broker", choices=BROKERS, default="auto",
                        help="MQTT broker (default: mosquitto if installed, else amqtt)")
    parser.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    configure_logging("warning")  # the demo's own Modbus check; the children log to files
    return asyncio.run(run_demo(args, sys.stdout))


def _shown(path: Path) -> str:
    """`path` as the user would type it from here."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _workdir(out: str | None) -> Path:
    if out is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = (OUTPUT_ROOT / f"started-{stamp}-{os.getpid()}").resolve()
    else:
        path = Path(out).resolve()
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise DemoError(f"--out {out}: exists and is not an empty directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _prepare(args: argparse.Namespace) -> Demo:
    workdir = _workdir(args.out)
    broker = plan_broker(args.broker, workdir / "broker")
    station_path, config = write_station(workdir, broker, any_free_port)
    plan = write_sequence(config, QUICK_SEQUENCE if args.quick else SEQUENCE, args.blind)
    return Demo(workdir, args.out is None, broker, station_path, config, plan)


def _introduce(demo: Demo, out: TextIO) -> None:
    config = demo.config
    parts = [f"{what} {', '.join(names)}" for what, names in (
        ("MFCs", config.mfcs), ("valves", config.valves), ("GNSS", config.gnss),
        ("weather", config.met), ("gas analyzers", config.analyzers), ("DUT", config.dut))
        if names]
    renamed = " (renamed to the run id at the end)" if demo.named_by_run else ""
    blind = ", single-blind (no rate on public topics until it ends)" if demo.plan.spec.blind \
        else ""
    print("crf demo: a calibration on the simulated station, from a cold start to a "
          f"certificate\n"
          f"  output    {_shown(demo.workdir)}/{renamed}\n"
          f"  broker    {demo.broker.name}, anonymous on {HOST}:{demo.broker.port}\n"
          f"  station   {config.station}: {'; '.join(parts)}\n"
          f"  sequence  {demo.plan.spec.name}: {len(demo.plan.steps)} steps{blind}",
          file=out, flush=True)


async def _listening(port: int, child: Child) -> None:
    """Return once the broker accepts connections on `port` (it says so no other way)."""
    async with asyncio.timeout(READY_TIMEOUT_S):
        while True:
            if not child.running:
                raise child.failure(f"exited with {child.process.returncode}")
            try:
                _, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


async def _until(watch: StationWatch, condition: Callable[[], bool], timeout_s: float | None,
                 what: str, daemon: Child, following: asyncio.Task[None]) -> None:
    """Await `condition` on what the watch saw; fail if the daemon exits or the broker
    connection ends first, or after `timeout_s`."""
    waiting = asyncio.create_task(watch.until(condition))
    exited = asyncio.create_task(daemon.process.wait())
    try:
        done, _ = await asyncio.wait({waiting, exited, following}, timeout=timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        exited.cancel()
    if waiting in done:
        return
    if exited in done:
        raise daemon.failure(f"exited with {exited.result()}")
    if following in done:
        raise DemoError(f"lost the broker: {following.exception()}")
    raise DemoError(f"{what} within {timeout_s:g} s")


async def _start_run(demo: Demo, children: Children) -> str:
    """`crf ctl start`, as an operator would; the run id from its reply."""
    argv = [*CRF, "ctl", "--config", str(demo.station_path), "start", demo.plan.spec.name,
            "--operator", OPERATOR, "--dut", ", ".join(demo.config.dut)]
    code, output = await children.run("ctl", argv, COMMAND_TIMEOUT_S)
    if code != EXIT_OK:
        raise DemoError(f"crf ctl start failed (exit {code}):\n"
                        f"{log_tail(children.logs / 'ctl.log', 3)}")
    return str(json.loads(output)["run_id"])


async def _calibrate(demo: Demo, children: Children, watch: StationWatch, out: TextIO) -> None:
    """Start the broker, the simulator and the daemon, run the sequence to its end and
    wait for the DUT's reports; what it learns goes into `demo`."""
    station = str(demo.station_path)
    broker = await children.start("broker", demo.broker.argv)
    sim = await children.start("sim", [*CRF, "sim", "--config", station], piped=True)
    await _listening(demo.broker.port, broker)  # both boot meanwhile
    await sim.ready_line(SIM_READY, READY_TIMEOUT_S)
    daemon = await children.start("daemon", [*CRF, "daemon", "--config", station,
                                             "--log-level", "info"])
    print(f"  started   broker pid {broker.process.pid}, crf sim pid {sim.process.pid}, "
          f"crf daemon pid {daemon.process.pid}", file=out, flush=True)
    assert demo.config.mqtt is not None  # write_station saw to it
    async with make_client(demo.config.mqtt, f"crf-demo-{uuid.uuid4().hex[:8]}") as client:
        await watch.subscribe(client)
        following = asyncio.create_task(watch.follow(client), name="demo watch")
        try:
            await _until(watch, lambda: watch.online, READY_TIMEOUT_S,
                         "the daemon did not come online", daemon, following)
            demo.run_id = watch.run_id = await _start_run(demo, children)
            print(f"  run       {demo.run_id}, started over MQTT as an operator would: "
                  f"crf ctl start {demo.plan.spec.name}", file=out, flush=True)
            await _until(watch, lambda: watch.final_state is not None, None,
                         "the run did not end", daemon, following)
            demo.final_state = watch.final_state
            watch.end_progress()
            with contextlib.suppress(DemoError):  # a report short is said below
                await _until(watch, lambda: watch.dut_reports >= watch.holds,
                             DUT_REPORTS_WAIT_S, "the DUT did not report", daemon, following)
            print(f"run {demo.run_id} {demo.final_state}; the DUT reported "
                  f"{watch.dut_reports} of {watch.holds} holds", file=out, flush=True)
        finally:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await following
            watch.end_progress()


async def _shut_down(demo: Demo, children: Children, out: TextIO) -> tuple[str, bool]:
    """Stop the daemon (it zeroes the MFCs and closes the valves), read back what the
    simulated devices hold, then stop the simulator and the broker; what the read-back
    says, and whether that is safe."""
    print("stopping: the daemon (it zeroes the MFCs), then the simulator and the broker",
          file=out, flush=True)
    started = "daemon" in children.started
    await children.stop("daemon", stop_budget_s(demo.config))  # never cut its stop short
    check = await check_safe(demo.config, demo.workdir) if children.running("sim") else None
    await children.stop_all()
    if check is not None:
        return check.line(), check.safe
    if not started:
        return "nothing was released: the daemon never started", True
    return "NOT CONFIRMED SAFE: the simulator ended before its MFCs could be read back", False


async def _report(demo: Demo, out: TextIO) -> bool:
    """`crf report` of the run into report/; say where its files are."""
    assert demo.run_id is not None
    children = Children(demo.workdir)
    report_dir = demo.workdir / REPORT_DIR
    code, _ = await children.run("report", [
        *CRF, "report", demo.run_id, "--config", str(demo.station_path),
        "--out", str(report_dir)], REPORT_TIMEOUT_S)
    results, certificate = report_dir / "results.json", report_dir / "certificate.pdf"
    if code != EXIT_OK or not (results.exists() and certificate.exists()):
        print(f"crf report failed (exit {code}):\n{log_tail(children.logs / 'report.log')}",
              file=out, flush=True)
        return False
    for line in _results_table(json.loads(results.read_text(encoding="utf-8"))):
        print(line, file=out)
    print(f"results:     {_shown(results)}\ncertificate: {_shown(certificate)}", file=out,
          flush=True)
    return True


def _results_table(results: dict[str, Any]) -> list[str]:
    """The calibration points of results.json, one line each."""
    def number(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [f"{'point':<6} {'nominal':>12} {'n':>2} {'truth kg/h':>11} {'DUT kg/h':>9} "
             f"{'error %':>8} {'repeat. %':>9}"]
    for point in results.get("points", []):
        lines.append(
            f"{point['point']:<6} {point['nominal']:>7g} {point['unit']:<4} "
            f"{point['n_valid']:>2} {number(point['truth_kg_h'], '.5f'):>11} "
            f"{number(point['dut_kg_h'], '.5f'):>9} "
            f"{number(point['rate_error_pct'], '+.2f'):>8} "
            f"{number(point['rate_repeatability_pct'], '.2f'):>9}")
    return lines


class _Stages:
    """Runs the demo's stages one at a time; SIGINT, SIGTERM or SIGHUP cancels the one
    running (the run, the report), never the shut-down between them."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.signal: str | None = None  # the first signal that came
        self._task: asyncio.Task[Any] | None = None
        self._saying = ""

    def interrupt(self, signum: signal.Signals) -> None:
        self.signal = self.signal or signum.name
        if self._task is not None and not self._task.done():
            print(f"\n{signum.name}: {self._saying}", file=self.out, flush=True)
            self._task.cancel()
        else:
            print(f"\n{signum.name}: stopping safely, please wait", file=self.out, flush=True)

    async def run(self, stage: Coroutine[Any, Any, T], saying: str) -> T:
        """Run `stage`; CancelledError if a signal cancelled it (`signal` says which)."""
        self._task, self._saying = asyncio.create_task(stage), saying
        try:
            return await self._task
        finally:
            self._task = None


async def run_demo(args: argparse.Namespace, out: TextIO) -> int:
    """The whole demo; the exit code (EXIT_UNSAFE if the MFCs were not seen at zero)."""
    try:
        demo = _prepare(args)
    except (DemoError, BrokerChoiceError, StationCopyError, OSError) as error:
        print(f"crf demo: {error}", file=sys.stderr)
        return EXIT_CONFIG
    _introduce(demo, out)
    children = Children(demo.workdir)
    stages = _Stages(out)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        asyncio.get_running_loop().add_signal_handler(signum, stages.interrupt, signum)
    failure: str | None = None
    try:
        await stages.run(_calibrate(demo, children, StationWatch(demo.config.station, out),
                                    out), "aborting the run, stopping everything safely")
    except asyncio.CancelledError:
        if stages.signal is None:
            raise
        failure = f"interrupted by {stages.signal}"
    except (DemoError, ChildFailedError, aiomqtt.MqttError) as error:
        failure = str(error)
    finally:
        safety, safe = await _shut_down(demo, children, out)
    if failure is None and demo.final_state != State.COMPLETED:
        failure = f"the run ended {demo.final_state}"
    if failure is not None:
        print(f"crf demo: {failure}", file=out)
    if demo.named_by_run and demo.run_id is not None:
        demo.workdir = demo.workdir.rename(demo.workdir.with_name(demo.run_id))
        demo.station_path = demo.workdir / demo.station_path.name
    reported = False
    if failure is None:
        try:
            reported = await stages.run(_report(demo, out), "stopping the report")
        except asyncio.CancelledError:
            if stages.signal is None:
                raise
            print(f"crf demo: report interrupted by {stages.signal}", file=out)
    print(f"output: {_shown(demo.workdir)}/ (station.toml, logs/, store.sqlite"
          + (", report/)" if reported else ")"), file=out)
    print(safety, file=out, flush=True)
    if not safe:
        return EXIT_UNSAFE
    return EXIT_OK if reported else EXIT_FAILED
