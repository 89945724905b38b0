"""The lifecycle shared by the demo's small asyncio servers: start, stop, one task per client."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

logger = logging.getLogger(__name__)


class StreamServer:
    """An asyncio stream server whose `stop()` closes every client connection.

    Subclasses implement `_serve_client`. `port` 0 binds a free port, and
    `port` is the bound one after `start()`.
    """

    description = "demo server"

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._callback_tasks: set[asyncio.Task[Any]] = set()
        self._connection_tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind and start accepting connections; afterwards `port` is the bound port."""
        await self._listen()

    async def serve_until_signal(self) -> None:
        """Start, serve until SIGINT or SIGTERM, then stop."""
        await self.start()
        stop_requested = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, stop_requested.set)
        try:
            await stop_requested.wait()
        finally:
            await self.stop()

    async def _listen(self) -> None:
        """Bind and start accepting connections.

        NOTE: with port 0 and a host name that resolves to several addresses, each
        socket gets its own port and `port` is only the first one.
        """
        if self._server is not None:
            raise RuntimeError(f"the {self.description} is already running")
        self._server = await asyncio.start_server(self._handle_client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, close every open connection and wait until they are closed."""
        server = self._server
        if server is None:
            return
        self._server = None
        server.close()
        for task in self._connection_tasks:
            task.cancel()
        if self._callback_tasks:
            await asyncio.wait(list(self._callback_tasks))
        await server.wait_closed()
        logger.info("%s on %s:%d stopped", self.description, self.host, self.port)

    async def _handle_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Python 3.11's asyncio.streams logs "Exception in callback" when the task that
        # runs this callback is cancelled, so stop() cancels an inner task instead.
        callback_task = asyncio.current_task()
        assert callback_task is not None
        if self._server is None:
            # Accepted just before stop(), which did not see this connection.
            writer.close()
            return
        connection_task = asyncio.create_task(self._serve_client(reader, writer))
        self._callback_tasks.add(callback_task)
        self._connection_tasks.add(connection_task)
        try:
            await asyncio.wait([connection_task])
        finally:
            self._callback_tasks.discard(callback_task)
            self._connection_tasks.discard(connection_task)

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        raise NotImplementedError
