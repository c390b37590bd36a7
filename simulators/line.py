"""A Modbus line: a port in front of the SlaveBus of the devices wired to it."""

from __future__ import annotations

from drivers.modbus_line import LineSettings
from simulators.port import SimPort
from simulators.slave import SlaveBus


class SimLine(SimPort):
    """A port (pty or TCP listener) in front of a SlaveBus."""

    def __init__(self, name: str, settings: LineSettings, bus: SlaveBus) -> None:
        super().__init__(name)
        self.settings = settings
        self.bus = bus

    @property
    def transactions(self) -> int:
        """Replies sent on this line since it was created."""
        return self.bus.transactions

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint

    def pull_cable(self) -> None:
        """Cut the line behind the adapter: the port stays, nothing answers, and the
        devices keep their state (setpoints, open valves), as real ones do."""
        self.bus.cable_pulled = True

    def plug_cable(self) -> None:
        self.bus.cable_pulled = False
