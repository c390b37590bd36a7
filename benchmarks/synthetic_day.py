"""The plan of a synthetic test day: the station, the run's 200 steps with their times,
each MFC's flow over the day, the MFC faults and the DUT's report windows.

Everything the daemon would decide is decided by its own code: the sequence is planned by
`plan_sequence`, each step's MFC and setpoint chosen by `choose_mfc`, the settle band is
`settle_tolerance`'s. Only time is simulated: an MFC's flow follows its setpoint to first
order, and a step becomes stable when that flow enters the band.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np

from acquisition.config.station import StationConfig, load_config
from acquisition.run.decisions import settle_tolerance
from acquisition.run.ranging import Assignment, choose_mfc
from acquisition.run.sequence import Plan, SequenceSpec, StepSpec, StepTiming, plan_sequence
from drivers.sample import Quality

STEPS = 200
DUT_REPORTS = 400
DAY_START = datetime(2026, 6, 1, tzinfo=UTC)
RUN_ID = DAY_START.strftime("%Y%m%dT%H%M%SZ") + "-5ca1"
DAEMON_LEAD_S = 180.0  # the daemon was up this long before the run started
NS = 1_000_000_000

# The sequence: blanks and rates at both points, each 20 times, shuffled (seeded).
POINT_RATES = [("P1", 0.0, "kg/h"), ("P1", 0.1, "kg/h"), ("P1", 500.0, "g/h"),
               ("P1", 1.5, "kg/h"), ("P1", 3.0, "kg/h"), ("P2", 0.0, "kg/h"),
               ("P2", 0.5, "kg/h"), ("P2", 1.5, "kg/h"), ("P2", 60.0, "SLPM"),
               ("P2", 6.0, "kg/h")]

STATION_TOML = """\
# A synthetic station for benchmarks/report_scale.py: config/sim.toml's devices, every
# one at its fastest rate. No device exists: the run store is made up.
station = "scale-01"

[storage]
path = "store.sqlite"

[acquisition]
sample_rate_hz = 10.0
commit_interval_s = 1.0

[lines.bus0]
transport = "serial"
port = "/dev/ttyUSB0"
baudrate = 115200
timeout_s = 0.3
retries = 1

[lines.gw0]
transport = "tcp"
host = "192.0.2.30"
tcp_port = 502
timeout_s = 0.3

[mfcs.mfc_low]
line = "bus0"
unit_id = 1
profile = "alicat"
full_scale = 5.0
model = "Alicat MC-5SLPM-D"
serial_number = "A-1001"

[mfcs.mfc_high]
line = "bus0"
unit_id = 2
profile = "alicat"
full_scale = 100.0
model = "Alicat MCR-100SLPM-D"
serial_number = "A-1002"
certificate_id = "CAL-2026-0412"
certificate_u_pct = 0.6

[mfcs.mfc_bh]
line = "bus0"
unit_id = 3
profile = "bronkhorst"
full_scale = 50.0
model = "Bronkhorst F-201CV"
serial_number = "B-3003"

[mfcs.mfc_tcp]
line = "gw0"
unit_id = 1
profile = "generic"
full_scale = 200.0
word_order = "little"
model = "generic float32 MFC"
serial_number = "G-4004"

[valves.V1]
line = "bus0"
unit_id = 9
coil = 0

[valves.V2]
line = "bus0"
unit_id = 9
coil = 1

[gnss.rx_p1]
transport = "serial"
port = "/dev/ttyUSB1"
baudrate = 115200

[met.ws1]
protocol = "nmea"
transport = "serial"
port = "/dev/ttyUSB2"
baudrate = 4800

[analyzers.ch4_east]
transport = "serial"
port = "/dev/ttyUSB3"
baudrate = 115200
format = "delimited"
delimiter = ","
columns = ["t", "ch4", "co2", "h2o"]
channels = { ch4 = "ppm", co2 = "ppm", h2o = "%" }
timestamp = { field = "t", format = "iso" }

[release_points.P1]
description = "mast A, 2 m stack"
mfcs = ["mfc_low", "mfc_high"]
valve = "V1"
max_rate = 3.5
survey = { receiver = "rx_p1", min_quality = "rtk_fixed", window_s = 60, min_fixes = 100 }

[release_points.P2]
description = "ground-level diffuser"
mfcs = ["mfc_bh", "mfc_tcp"]
valve = "V2"
max_rate = 8
latitude = 34.752310
longitude = 113.629120
altitude_m = 101.2
horizontal_uncertainty_m = 0.02

[gas]
species = "CH4"
purity = 0.9995
purity_u = 0.0002

[clock]
reference = "rx_p1"
"""
P1_ANTENNA = (34.752057, 113.629433, 101.5)  # where rx_p1's fixes scatter around


def write_station(folder: Path, hours: float) -> StationConfig:
    """The station file in `folder` (its store beside it), loaded as the tools load it.
    The DUT's wind-run rule shrinks with a shorter day, whose steps last seconds."""
    path = folder / "station.toml"
    path.write_text(STATION_TOML + f"""
[dut.d1]
reporting_delay_s = 0
min_overlap = 0.5
wind_run_m = {100 * min(1.0, hours / 24):g}
wind_device = "ws1"
""")
    return load_config(path)


def ns_of(when: datetime) -> int:
    return int(when.timestamp()) * NS


@dataclass(frozen=True)
class FlowLaw:
    """An MFC's noise-free flow: first order from `start` toward `target` since `t_ns`."""

    target: float
    start: float
    t_ns: int
    tau_s: float

    def at(self, t_ns: np.ndarray) -> np.ndarray:
        elapsed_s = np.maximum(t_ns - self.t_ns, 0) / NS
        return self.target + (self.start - self.target) * np.exp(-elapsed_s / self.tau_s)


@dataclass(frozen=True)
class StepTimes:
    """When a step was armed, settling, stable, holding and ended (wall ns)."""

    index: int
    assignment: Assignment
    arm_ns: int
    settle_ns: int  # setpoint written
    stable_ns: int | None  # None: it timed out settling
    hold_ns: int | None
    end_ns: int


@dataclass(frozen=True)
class Fault:
    """An MFC that did not answer its polls from `start_ns` to `end_ns`."""

    device: str
    start_ns: int
    end_ns: int
    quality: Quality


@dataclass(frozen=True)
class Day:
    config: StationConfig
    plan: Plan
    daemon_start_ns: int
    start_ns: int
    end_ns: int  # the run's end (its devices zeroed just before)
    steps: list[StepTimes]
    faults: list[Fault]
    starved_step: int  # the step whose gas supply ran short: it never settles
    flow_changes: list[tuple[int, dict[str, FlowLaw]]]  # each MFC's flow law from a time on

    @property
    def run_id(self) -> str:
        return RUN_ID

    @cached_property
    def _change_times(self) -> np.ndarray:
        return np.array([t_ns for t_ns, _ in self.flow_changes], np.int64)

    def flow(self, mfc: str, t_ns: np.ndarray) -> np.ndarray:
        """The MFC's noise-free flow (its unit) at each time."""
        which = np.searchsorted(self._change_times, t_ns, side="right") - 1
        flow = np.zeros(t_ns.shape)
        for segment in np.unique(which):
            chosen = which == segment
            flow[chosen] = self.flow_changes[max(int(segment), 0)][1][mfc].at(t_ns[chosen])
        return flow

    def release_kg_h(self, point: str, t_ns: np.ndarray) -> np.ndarray:
        """What leaves a release point (kg/h): its MFCs' flows."""
        return sum((self.flow(mfc, t_ns) * self.config.conversion(mfc).kg_h_per_lpm
                    for mfc in self.config.release_points[point].mfcs), np.zeros(t_ns.shape))

    def dut_windows(self) -> list[tuple[int, int]]:
        """The DUT's report windows: it averages over fixed windows that tile the run,
        knowing nothing of the steps (some straddle two steps and match none)."""
        edges = np.linspace(self.start_ns, self.end_ns, DUT_REPORTS + 1).astype(np.int64)
        return [(int(a), int(b)) for a, b in itertools.pairwise(edges.tolist())]


def timing_for(hours: float) -> tuple[StepTiming, float]:
    """The steps' timing and the MFCs' time constant (s), so that 200 steps fill `hours`."""
    period_s = hours * 3600 / STEPS
    timing = StepTiming(settle_tolerance_pct=2.0, settle_window_s=0.08 * period_s,
                        settle_timeout_s=0.5 * period_s, hold_s=0.913 * period_s)
    return timing, min(1.0, period_s / 100)


def plan_day(config: StationConfig, hours: float, seed: int) -> Day:
    """The run of the day: its plan, each step's times, the flows, the faults."""
    timing, tau_s = timing_for(hours)
    spec = SequenceSpec(
        name="scale-day", description="a long test day: blanks and four rates at two points",
        randomize=True, seed=seed, defaults=timing,
        steps=[StepSpec(point=point, rate=rate, unit=unit, repeats=STEPS // len(POINT_RATES))
               for point, rate, unit in POINT_RATES])
    plan = plan_sequence(spec, config, Path("scale-day.toml"))
    rng = np.random.default_rng(seed)
    starved = next(step.index for step in plan.steps[STEPS // 2:] if step.target_kg_h > 1)
    start_ns = ns_of(DAY_START)
    laws = {mfc: FlowLaw(0.0, 0.0, start_ns, tau_s) for mfc in config.mfcs}
    changes: list[tuple[int, dict[str, FlowLaw]]] = [(start_ns, laws)]
    arming_s = min(0.12, timing.settle_window_s / 4)  # arming: valve and setpoint writes
    t_ns = start_ns + NS // 10
    steps = []
    for step in plan.steps:
        assignment = choose_mfc(config, step.point, step.target_kg_h)
        arm_ns = t_ns
        settle_ns = arm_ns + int(arming_s * NS)
        # the starved step's supply gives 90 % of the setpoint at most
        reachable = assignment.setpoint * (0.9 if step.index == starved else 1.0)
        laws = {mfc: FlowLaw(reachable if mfc == assignment.mfc else 0.0,
                             float(law.at(np.array(settle_ns))), settle_ns, tau_s)
                for mfc, law in laws.items()}
        changes.append((settle_ns, laws))
        if step.index == starved:  # never in the band: the step times out, is skipped
            stable_ns = hold_ns = None
            end_ns = settle_ns + int(timing.settle_timeout_s * NS)
        else:
            band = settle_tolerance(assignment.setpoint, timing.settle_tolerance_pct,
                                    config.mfcs[assignment.mfc].full_scale)
            gap = abs(laws[assignment.mfc].start - assignment.setpoint)
            entering_s = tau_s * math.log(gap / band) if gap > band else 0.0
            stable_ns = settle_ns + int(entering_s * NS)
            hold_ns = stable_ns + int((timing.settle_window_s + rng.uniform(0, 0.1)) * NS)
            end_ns = hold_ns + int(timing.hold_s * NS) + int(rng.uniform(0.01, 0.03) * NS)
        steps.append(StepTimes(step.index, assignment, arm_ns, settle_ns, stable_ns, hold_ns,
                               end_ns))
        t_ns = end_ns + int(rng.uniform(0.001, 0.004) * NS)
    zeroed_ns = t_ns + NS // 10
    changes.append((zeroed_ns, {mfc: FlowLaw(0.0, float(law.at(np.array(zeroed_ns))),
                                             zeroed_ns, tau_s) for mfc, law in laws.items()}))
    end_ns = zeroed_ns + NS // 500
    return Day(config, plan, start_ns - int(DAEMON_LEAD_S * NS), start_ns, end_ns, steps,
               _faults(config, rng, start_ns, end_ns, hours), starved, changes)


def _faults(config: StationConfig, rng: np.random.Generator, start_ns: int, end_ns: int,
            hours: float) -> list[Fault]:
    """A few short MFC faults (each under the comm-loss interlock's 5 s): timeouts on the
    serial line, a dropped TCP connection."""
    count = max(2, round(hours * 0.75))
    starts = np.sort(rng.integers(start_ns, end_ns - 5 * NS, count))
    faults = []
    for number, fault_start in enumerate(starts.tolist()):
        device = "mfc_tcp" if number == count // 2 else str(rng.choice(
            [name for name, mfc in config.mfcs.items() if mfc.line == "bus0"]))
        quality = Quality.DISCONNECTED if device == "mfc_tcp" else Quality.TIMEOUT
        faults.append(Fault(device, fault_start,
                            fault_start + int(rng.uniform(0.5, 3.0) * NS), quality))
    return faults
