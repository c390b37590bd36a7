"""A TCP line: a Modbus TCP server (MBAP framing) or an RTU-over-TCP gateway."""

from __future__ import annotations

import asyncio

from pymodbus.framer import FramerBase, FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU

from drivers.modbus_line import LineSettings
from simulators.line import SimLine
from simulators.slave import SlaveBus
from simulators.tcp_server import ConnectionServer


class TcpLine(SimLine):
    """Listens on host:tcp_port; every connection talks to the same bus of devices."""

    def __init__(self, name: str, settings: LineSettings, bus: SlaveBus) -> None:
        super().__init__(name, settings, bus)
        self._framer: type[FramerBase] = (
            FramerRTU if settings.transport == "rtu-tcp" else FramerSocket
        )
        self._server = ConnectionServer(name, self._serve_connection)

    async def _open(self) -> None:
        await self._server.open(self.settings.host, self.settings.tcp_port)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self.bus.serve_stream(reader, writer.write, self._framer(DecodePDU(is_server=True)))

    async def _close(self) -> None:
        if self._server.is_open:
            await self._server.close()
            await self.bus.cancel_late()
