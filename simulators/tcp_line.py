"""A TCP line: a Modbus TCP server (MBAP framing) or an RTU-over-TCP gateway."""

from __future__ import annotations

import asyncio

import structlog
from pymodbus.framer import FramerBase, FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU

from drivers.modbus_line import LineSettings
from simulators.line import SimLine
from simulators.slave import SlaveBus

log = structlog.get_logger(__name__)

CLOSE_WAIT_S = 1.0  # for a connection to finish the reply it is pacing


class TcpLine(SimLine):
    """Listens on host:tcp_port; every connection talks to the same bus of devices."""

    def __init__(self, name: str, settings: LineSettings, bus: SlaveBus) -> None:
        super().__init__(name, settings, bus)
        self._framer: type[FramerBase] = (
            FramerRTU if settings.transport == "rtu-tcp" else FramerSocket
        )
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def _open(self) -> None:
        self._server = await asyncio.start_server(
            self._serve_connection, self.settings.host, self.settings.tcp_port,
            reuse_address=True,
        )

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            await self.bus.serve_stream(
                reader, writer.write, self._framer(DecodePDU(is_server=True))
            )
        except ConnectionError as error:
            log.debug("sim connection lost", line=self.name, error=str(error))
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self._server = None
        # Closing a connection ends its reader, so its handler returns by itself:
        # asyncio's stream server reports a cancelled handler as an error.
        tasks = list(self._connections)
        for writer in self._connections.values():
            writer.close()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=CLOSE_WAIT_S)
            for task in stuck:
                task.cancel()
        await self.bus.cancel_late()
