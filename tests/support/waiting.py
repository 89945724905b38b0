"""Poll a condition from a synchronous test until it is true or the time runs out."""

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], object], seconds: float = 5.0) -> bool:
    """Return True as soon as `condition()` is truthy, False after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())
