class RateTable:
    """The GCRA region of a SharedStore mapping, checked in C."""

    def __init__(
        self, memory: object, buckets: int, rate_offset: int, handles: tuple[int, ...]
    ) -> None: ...
    def check(
        self,
        key: bytes,
        now: float,
        interval: float,
        capacity: float,
        item: bytes,
        policy_field: tuple[bytes, bytes],
    ) -> list[tuple[bytes, bytes]] | tuple[float, int, float, float] | None: ...
    def release(self) -> None: ...

def owner_pid() -> int:
    """Return the pid that this process writes into a stripe record while it holds the lock."""
