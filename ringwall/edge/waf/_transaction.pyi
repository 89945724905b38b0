from collections.abc import Sequence

def run(
    instance: int,
    rules: int,
    transaction_id: bytes,
    client_ip: bytes,
    client_port: int,
    server_ip: bytes,
    server_port: int,
    method: bytes,
    uri: bytes,
    version: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
) -> tuple[int, bytes | None, tuple[bytes, ...]]:
    """Run one transaction through the request phases and the logging phase.

    Returns the intervention's status (200 without one), the intervention's
    log line or None, and the log lines of the matched rules.
    """

def install_log_callback(instance: int) -> None:
    """Make run() receive the log lines of the ModSecurity instance at address `instance`."""
