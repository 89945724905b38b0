"""An asyncio event loop running in a background thread, for synchronous tests."""

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT_SECONDS = 10.0


class LoopThread:
    """Runs its own event loop in a daemon thread until `close()`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            self.loop.run_until_complete(self._cancel_remaining_tasks())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()

    async def _cancel_remaining_tasks(self) -> None:
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = DEFAULT_TIMEOUT_SECONDS) -> T:
        """Run `coroutine` on the loop and return its result.

        Raises TimeoutError, and cancels the coroutine, after `timeout` seconds.
        """
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def close(self) -> None:
        """Stop the loop, cancel the tasks left on it and join the thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(DEFAULT_TIMEOUT_SECONDS)
        if self._thread.is_alive():
            raise RuntimeError(f"event loop thread {self._thread.name} did not stop")


@contextmanager
def running_loop(name: str) -> Iterator[LoopThread]:
    """Yield a LoopThread and close it on exit."""
    loop_thread = LoopThread(name)
    try:
        yield loop_thread
    finally:
        loop_thread.close()
