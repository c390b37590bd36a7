"""A TCP listener that keeps track of its connections, so that closing it ends them all."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)

CLOSE_WAIT_S = 1.0  # for a connection to finish the reply it is pacing
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ConnectionServer:
    """Serves each connection with `handler` until it ends or the server closes."""

    def __init__(self, name: str, handler: Handler) -> None:
        self.name = name
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def writers(self) -> list[asyncio.StreamWriter]:
        return list(self._connections.values())

    @property
    def is_open(self) -> bool:
        return self._server is not None

    async def open(self, host: str | None, port: int | None) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            await self._handler(reader, writer)
        except ConnectionError as error:
            log.debug("sim connection lost", port=self.name, error=str(error))
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def close(self) -> None:
        """Stop listening and end every connection; a no-op when not open."""
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
