"""glibc's cache of freed blocks per thread, raised for gateways that run the WAF.

libmodsecurity 3.0.9 allocates and frees many small blocks in every
transaction. By default glibc keeps up to 7 freed blocks per size class in
each thread's cache (tcache). Beyond that a block goes to the arena's bins,
and because a worker with the WAF runs two threads, each of those mallocs
and frees takes the arena's lock. Measured in a tight loop on a second
thread (glibc 2.36, 2-vCPU Xeon VM), `glibc.malloc.tcache_count=128` took a
benign GET through CRS 3.3.4 from 415 µs to 375 µs. It took the 1 KB JSON
POST of bench/validated.py from 4,390 µs to 3,880 µs.

glibc reads its tunables only when a program starts, so `ringwall run`
starts itself again with GLIBC_TUNABLES set when the configuration has a WAF
policy (`restart_with_tuned_allocator`). A GLIBC_TUNABLES that already sets
`glibc.malloc.tcache_count`, to any value, is kept as it is.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence

log = logging.getLogger("ringwall")

TUNABLE = "glibc.malloc.tcache_count"
# Blocks per size class and thread. 128 gave the gains above, and 200 or
# 1000 gave no more. A full cache takes at most about 4 MiB per thread.
TCACHE_COUNT = 128


def tuned_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """Return a copy of `environ` that raises the tcache count, or None if it sets the count."""
    current = environ.get("GLIBC_TUNABLES", "")
    names = {item.split("=", 1)[0] for item in current.split(":")}
    if TUNABLE in names:
        return None
    setting = f"{TUNABLE}={TCACHE_COUNT}"
    return {**environ, "GLIBC_TUNABLES": f"{current}:{setting}" if current else setting}


def restart_with_tuned_allocator(arguments: Sequence[str]) -> None:
    """Replace this process with the interpreter running `arguments`, with the tcache raised.

    `arguments` are the interpreter's arguments, usually `sys.orig_argv[1:]`.
    Returns without a restart off glibc, or when GLIBC_TUNABLES already sets
    the count, as it does after the restart. Returns after logging a warning
    when the restart fails, and the process then runs with glibc's default.
    """
    if not _uses_glibc() or not sys.executable:
        return
    environment = tuned_environment(os.environ)
    if environment is None:
        return
    try:
        # The same interpreter and arguments that started this process.
        os.execve(sys.executable, [sys.executable, *arguments], environment)  # noqa: S606
    except OSError as exc:
        log.warning(
            "could not restart with a larger glibc tcache for the WAF, so WAF "
            "transactions cost more CPU",
            extra={"error": str(exc), "executable": sys.executable},
        )


def _uses_glibc() -> bool:
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        return False
    return version is not None and version.startswith("glibc")
