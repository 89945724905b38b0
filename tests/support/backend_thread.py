"""Run the demo backend in a background thread for synchronous tests."""

from collections.abc import Iterator
from contextlib import contextmanager

from ringwall.demo.backend import MAX_BODY_SIZE, DemoBackend
from tests.support.loop_thread import running_loop


@contextmanager
def running_backend(max_body_size: int = MAX_BODY_SIZE) -> Iterator[DemoBackend]:
    """Yield a started DemoBackend on 127.0.0.1 and a free port; stop it on exit.

    The backend runs on its own event loop in another thread. Reading `port`,
    `received` and `connection_count` from the test thread is safe, but calling its
    coroutines is not.
    """
    with running_loop("demo-backend") as loop_thread:
        backend = DemoBackend(max_body_size=max_body_size)
        loop_thread.run(backend.start())
        try:
            yield backend
        finally:
            loop_thread.run(backend.stop())
