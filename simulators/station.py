"""A whole station, simulated: the public entry point for tests, benchmarks and `crf sim`.

Modbus devices (MFCs, anemometers) answer on their lines; GNSS receivers, NMEA weather
stations and gas analyzers talk on their own ports (pty or TCP); simulated DUTs report
over the station's broker. Analyzers and DUTs see the release as it really is now.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Protocol, TypeVar

import numpy as np

from acquisition.config.station import ModbusMetConfig, StationConfig
from acquisition.config.tables import ModbusAnalyzerConfig, TextAnalyzerConfig
from simulators.analyzer import SimulatedAnalyzer, unreadable
from simulators.device import SimulatedMfc
from simulators.dut import SimulatedDut
from simulators.gnss import Position, SimulatedGnss
from simulators.line import SimLine
from simulators.met import NmeaMet, SimulatedAnemometer
from simulators.modbus_analyzer import SimulatedGasAnalyzer
from simulators.modbus_device import ModbusDevice, SlaveDevice
from simulators.pacing import BusTiming
from simulators.plume import Source
from simulators.relay import SimulatedRelay
from simulators.replay import GnssReplay
from simulators.serial_line import PtyLine
from simulators.settings import AnalyzerSim, GnssSim, SimConfigError, SimSettings, sim_settings
from simulators.slave import SlaveBus
from simulators.stream_device import StreamDevice
from simulators.stream_port import stream_port
from simulators.tcp_line import TcpLine
from simulators.wind import WindModel

DEFAULT_POSITION = Position(34.752057, 113.629433, 101.5)  # a receiver nobody placed
_T = TypeVar("_T")


class _Part(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def _pick(table: Mapping[str, _T], name: str, what: str) -> _T:
    try:
        return table[name]
    except KeyError:
        raise KeyError(f"no simulated {what} '{name}' (have: {', '.join(table)})") from None


def true_position(config: StationConfig, name: str, sim: GnssSim) -> Position:
    """Where the antenna is: [sim.gnss.<name>] coordinates, else those of a release point
    this receiver surveys (if it has any), else DEFAULT_POSITION; the altitude likewise."""
    fallback = DEFAULT_POSITION
    for point in config.release_points.values():
        if (point.survey and point.survey.receiver == name
                and point.latitude is not None and point.longitude is not None):
            altitude = fallback.altitude_m if point.altitude_m is None else point.altitude_m
            fallback = Position(point.latitude, point.longitude, altitude)
            break
    if sim.latitude is not None and sim.longitude is not None:
        fallback = Position(sim.latitude, sim.longitude, fallback.altitude_m)
    if sim.altitude_m is not None:
        fallback = Position(fallback.latitude, fallback.longitude, sim.altitude_m)
    return fallback


RELAY_COILS = 8  # a common relay module size


class SimStation:
    """Serves every MFC, Modbus anemometer, GNSS receiver and NMEA met station of a config,
    the text analyzers that have a `[sim.analyzers.*]` table (only it places the inlet),
    and runs the DUTs of `[sim.dut.*]`.

    `pace` and `seed` override the config's `[sim]` table (a device's own `seed` in
    `[sim.gnss.*]` / `[sim.met.*]` still wins); relative `replay` paths are taken from
    `base` (the config file's folder).
    Raises SimConfigError for a bad `[sim]` table and ValueError for a profile the
    simulator cannot serve.
    """

    def __init__(self, config: StationConfig, *, pace: bool | None = None,
                 seed: int | None = None, base: Path | None = None) -> None:
        self.config = config
        self.settings: SimSettings = sim_settings(config, base)
        streams = np.random.SeedSequence(seed if seed is not None else self.settings.seed)
        self._devices: dict[str, SimulatedMfc] = {}
        for (name, mfc), stream in zip(
            config.mfcs.items(), streams.spawn(len(config.mfcs)), strict=True
        ):
            behaviour = self.settings.device(name)
            self._devices[name] = SimulatedMfc(
                name, mfc, np.random.default_rng(stream),
                time_constant_s=behaviour.time_constant_s, noise=behaviour.noise,
                fault=behaviour.initial_fault(),
            )
        self._gnss: dict[str, SimulatedGnss | GnssReplay] = {}
        self._met: dict[str, NmeaMet | SimulatedAnemometer] = {}
        self._build_talkers(streams)
        self._analyzers: dict[str, SimulatedAnalyzer] = {}
        self._duts: dict[str, SimulatedDut] = {}
        self._build_plume_devices(streams)
        self._relays: dict[tuple[str, int], SimulatedRelay] = {}
        for valve in config.valves.values():
            key = (valve.line, valve.unit_id)
            coils = max(RELAY_COILS, valve.coil + 1,
                        len(self._relays[key].coils) if key in self._relays else 0)
            self._relays[key] = SimulatedRelay(f"relay {valve.line}/{valve.unit_id}",
                                               valve.unit_id, coils)
        self._gas_analyzers = {name: SimulatedGasAnalyzer(name, analyzer)
                               for name, analyzer in config.analyzers.items()
                               if isinstance(analyzer, ModbusAnalyzerConfig)}
        self._lines: dict[str, SimLine] = {}
        self._handled = asyncio.Condition()  # notified after every Modbus request
        for line_name, settings in config.lines.items():
            devices: dict[int, SlaveDevice] = {
                device.unit_id: device for line, device in self._modbus_devices()
                if line == line_name}
            if not devices:
                continue  # nothing to simulate on it
            paced = self.settings.paced(line_name) if pace is None else pace
            timing = BusTiming.of(settings) if paced and settings.transport != "tcp" else None
            bus = SlaveBus(devices, timing, on_request=self._device_state_may_differ)
            line_class = PtyLine if settings.transport == "serial" else TcpLine
            self._lines[line_name] = line_class(line_name, settings, bus)

    def _build_talkers(self, streams: np.random.SeedSequence) -> None:
        """GNSS receivers and met devices; a device's own `seed` beats the station's."""
        names = [*self.config.gnss, *self.config.met]
        rngs = dict(zip(names, streams.spawn(len(names)), strict=True))
        for name, receiver in self.config.gnss.items():
            if receiver.transport == "file":
                continue  # the capture is the device
            sim = self.settings.receiver(name)
            rng = np.random.default_rng(sim.seed if sim.seed is not None else rngs[name])
            port = stream_port(name, receiver)
            self._gnss[name] = (
                GnssReplay(name, port, sim.replay, rng) if sim.replay is not None else
                SimulatedGnss(name, port, sim, true_position(self.config, name, sim), rng))
        for name, met in self.config.met.items():
            if not isinstance(met, ModbusMetConfig) and met.transport == "file":
                continue
            weather = self.settings.weather(name)
            rng = np.random.default_rng(weather.seed if weather.seed is not None else rngs[name])
            self._met[name] = (
                SimulatedAnemometer(name, met, weather, rng) if isinstance(met, ModbusMetConfig)
                else NmeaMet(name, stream_port(name, met), weather, rng))

    def _build_plume_devices(self, streams: np.random.SeedSequence) -> None:
        """Analyzers and DUTs; spawned after the other devices, whose noise they leave as
        it was. Raises SimConfigError for an analyzer the station's parser cannot read."""
        rngs = iter(streams.spawn(len(self.settings.analyzers) + len(self.settings.dut)))
        for name, sim in self.settings.analyzers.items():
            rng = np.random.default_rng(sim.seed if sim.seed is not None else next(rngs))
            table = self.config.analyzers[name]
            assert isinstance(table, TextAnalyzerConfig)  # sim_settings saw to it
            fmt = sim.format or table.format
            if (problem := unreadable(fmt, self.config.gas.species, table)) is not None:
                raise SimConfigError([(f"sim.analyzers.{name}.format", problem)])
            self._analyzers[name] = SimulatedAnalyzer(
                name, stream_port(name, table), sim, fmt, self.config.gas.species,
                self._wind_for(sim, rng), self.sources, rng)
        for dut_id, sim in self.settings.dut.items():
            rng = np.random.default_rng(sim.seed if sim.seed is not None else next(rngs))
            assert self.config.mqtt is not None  # sim_settings saw to it
            self._duts[dut_id] = SimulatedDut(dut_id, self.config.station, self.config.mqtt,
                                              sim, self.sources, rng)

    def _wind_for(self, sim: AnalyzerSim, rng: np.random.Generator) -> WindModel:
        """The analyzer's fixed wind, else that of its met device (default the first)."""
        if (fixed := sim.fixed_wind) is not None:
            return WindModel(fixed, rng)
        return self._met[sim.met or next(iter(self._met))].wind

    def _place(self, point: str) -> tuple[float, float] | None:
        """Where a release point really is: its surveyed coordinates, else the true antenna
        position of the simulated receiver surveying it (None for a replay or a file)."""
        config = self.config.release_points[point]
        if config.latitude is not None and config.longitude is not None:
            return config.latitude, config.longitude
        receiver = self._gnss.get(config.survey.receiver) if config.survey else None
        if isinstance(receiver, SimulatedGnss):
            return receiver.true_position.latitude, receiver.true_position.longitude
        return None

    def sources(self) -> list[Source]:
        """Each release point the simulator can place, with the mass rate (kg/h of the
        species) leaving it now: its MFCs' true flow, while its valve (if any) is open. An
        MFC feeding several open points is shared evenly between them."""
        points = self.config.release_points
        passing = {name for name, point in points.items()
                   if point.valve is None or self.valve_open(point.valve)}
        outlets = Counter(mfc for name in passing for mfc in points[name].mfcs)
        found = []
        for name, point in points.items():
            if (place := self._place(name)) is None:
                continue
            kg_h = sum(self.config.conversion(mfc).mass_rate(self._devices[mfc].true_flow())
                       / outlets[mfc] for mfc in point.mfcs) if name in passing else 0.0
            found.append(Source(name, *place, kg_h))
        return found

    def _modbus_devices(self) -> list[tuple[str, SlaveDevice]]:
        """(line, device) for every Modbus slave: MFCs, anemometers, gas analyzers, relays."""
        found: list[tuple[str, SlaveDevice]] = [
            (self.config.mfcs[name].line, device) for name, device in self._devices.items()]
        for name, device in self._met.items():
            met = self.config.met[name]
            if isinstance(device, SimulatedAnemometer) and isinstance(met, ModbusMetConfig):
                found.append((met.line, device))
        found += [(device.line, device) for device in self._gas_analyzers.values()]
        found += [(line, relay) for (line, _), relay in self._relays.items()]
        return found

    async def _device_state_may_differ(self) -> None:
        async with self._handled:
            self._handled.notify_all()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition()` holds for the simulated devices; checked now and
        after every Modbus request they handle (the only way their state changes)."""
        async with self._handled:
            await self._handled.wait_for(condition)

    def valve_open(self, name: str) -> bool:
        """Whether the relay coil of a configured valve is on (valve open)."""
        valve = self.config.valves[name]
        return self._relays[(valve.line, valve.unit_id)].is_open(valve.coil)

    def _talkers(self) -> dict[str, StreamDevice]:
        talkers: dict[str, StreamDevice] = dict(self._gnss)
        talkers.update((name, device) for name, device in self._met.items()
                       if isinstance(device, NmeaMet))
        talkers.update(self._analyzers)
        return talkers

    @property
    def devices(self) -> dict[str, SimulatedMfc]:
        return dict(self._devices)

    @property
    def lines(self) -> dict[str, SimLine]:
        return dict(self._lines)

    def device(self, name: str) -> SimulatedMfc:
        return _pick(self._devices, name, "MFC")

    def line(self, name: str) -> SimLine:
        return _pick(self._lines, name, "line")

    def gnss(self, name: str) -> SimulatedGnss | GnssReplay:
        return _pick(self._gnss, name, "GNSS receiver")

    def met(self, name: str) -> NmeaMet | SimulatedAnemometer:
        return _pick(self._met, name, "met device")

    def analyzer(self, name: str) -> SimulatedAnalyzer:
        return _pick(self._analyzers, name, "analyzer")

    def dut(self, dut_id: str) -> SimulatedDut:
        return _pick(self._duts, dut_id, "DUT")

    def describe(self) -> list[str]:
        """One line per served device: name, what it is, where to reach it."""
        modbus = [
            f"{device.name} "
            + (f"profile={device.profile.name}" if isinstance(device, ModbusDevice)
               else f"relay coils={len(device.coils)}"  # type: ignore[attr-defined]
               ) + f" unit={device.unit_id} line={line} at={self.config.lines[line].endpoint}"
            for line, device in self._modbus_devices()
        ]
        return modbus + [f"{name} {part.describe()}"
                         for name, part in [*self._talkers().items(), *self._duts.items()]]

    def _parts(self) -> list[_Part]:
        return [*self._lines.values(), *self._talkers().values(), *self._duts.values()]

    async def start(self) -> None:
        """Open every port; on failure, close those already opened and re-raise."""
        started: list[_Part] = []
        try:
            for part in self._parts():
                await part.start()
                started.append(part)
        except BaseException:
            for part in started:
                await part.stop()
            raise

    async def stop(self) -> None:
        """Close every port and remove the port symlinks."""
        for part in self._parts():
            await part.stop()

    async def __aenter__(self) -> SimStation:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
