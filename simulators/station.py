"""A whole station's MFC lines, simulated: the public entry point for tests and benchmarks."""

from __future__ import annotations

from types import TracebackType

import numpy as np

from acquisition.config import StationConfig
from simulators.device import SimulatedMfc
from simulators.line import SimLine
from simulators.pacing import BusTiming
from simulators.serial_line import PtyLine
from simulators.settings import SimSettings, sim_settings
from simulators.slave import SlaveBus
from simulators.tcp_line import TcpLine


class SimStation:
    """Serves every `[mfcs.*]` of a config on its line, as a pty or TCP Modbus slave.

    `pace` and `seed` override the config's `[sim]` table (for every line).
    Raises SimConfigError for a bad `[sim]` table and ValueError for a profile the
    simulator cannot serve.
    """

    def __init__(
        self, config: StationConfig, *, pace: bool | None = None, seed: int | None = None
    ) -> None:
        self.config = config
        self.settings: SimSettings = sim_settings(config)
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
        self._lines: dict[str, SimLine] = {}
        for line_name, settings in config.lines.items():
            devices = {self._devices[name].unit_id: self._devices[name]
                       for name, mfc in config.mfcs.items() if mfc.line == line_name}
            if not devices:
                continue  # nothing to simulate on it
            paced = self.settings.paced(line_name) if pace is None else pace
            timing = BusTiming.of(settings) if paced and settings.transport != "tcp" else None
            bus = SlaveBus(devices, timing)
            line_class = PtyLine if settings.transport == "serial" else TcpLine
            self._lines[line_name] = line_class(line_name, settings, bus)

    @property
    def devices(self) -> dict[str, SimulatedMfc]:
        return dict(self._devices)

    @property
    def lines(self) -> dict[str, SimLine]:
        return dict(self._lines)

    def device(self, name: str) -> SimulatedMfc:
        try:
            return self._devices[name]
        except KeyError:
            have = ", ".join(self._devices)
            raise KeyError(f"no simulated MFC '{name}' (have: {have})") from None

    def line(self, name: str) -> SimLine:
        try:
            return self._lines[name]
        except KeyError:
            have = ", ".join(self._lines)
            raise KeyError(f"no simulated line '{name}' (have: {have})") from None

    def describe(self) -> list[str]:
        """One line per served device: name, profile, unit id, where to reach it."""
        return [
            f"{name} profile={device.profile.name} unit={device.unit_id} "
            f"line={self.config.mfcs[name].line} "
            f"at={self.config.lines[self.config.mfcs[name].line].endpoint}"
            for name, device in self._devices.items()
        ]

    async def start(self) -> None:
        """Open every port; on failure, close those already opened and re-raise."""
        started: list[SimLine] = []
        try:
            for line in self._lines.values():
                await line.start()
                started.append(line)
        except BaseException:
            for line in started:
                await line.stop()
            raise

    async def stop(self) -> None:
        """Close every port and remove the port symlinks."""
        for line in self._lines.values():
            await line.stop()

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
