"""A loopback upstream whose connections a test handles with its own coroutine."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from tests.support.loop_thread import running_loop

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """Read one request head, up to and including the blank line."""
    return await reader.readuntil(b"\r\n\r\n")


def content_length(head: bytes) -> int:
    """Return the Content-Length of a request head, or 0 if it has none."""
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


@contextmanager
def scripted_upstream(handler: Handler) -> Iterator[int]:
    """Serve 127.0.0.1 on a free port, run `handler` for each connection and yield the port.

    A connection closes when its handler returns. A handler that fails with
    ConnectionError or IncompleteReadError (the gateway went away) ends quietly.
    """
    with running_loop("scripted-upstream") as loop_thread:

        async def start() -> asyncio.Server:
            async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                try:
                    await handler(reader, writer)
                except (ConnectionError, asyncio.IncompleteReadError):
                    pass
                finally:
                    writer.close()

            return await asyncio.start_server(serve, "127.0.0.1", 0)

        server = loop_thread.run(start())
        try:
            yield server.sockets[0].getsockname()[1]
        finally:

            async def stop() -> None:
                server.close()

            loop_thread.run(stop())
