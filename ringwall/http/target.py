"""Split a request-target into the canonical path and the raw query.

The path that routing, later checks, the access log and the upstream see
is the one `ringwall.http.canonical.canonical_path` returns, so a layer
and the backend can never read two different paths. The query is kept as
received and forwarded unchanged; no path rule ever reads it.
"""

from __future__ import annotations

from ringwall.errors import BadRequest
from ringwall.http.canonical import canonical_path

LAYER = "target"


def split_target(target: bytes) -> tuple[str, bytes]:
    """Return the canonical path and the raw query (b"" when absent) of an origin-form target.

    Raises `BadRequest` for any target the gateway will not forward.
    """
    if not target.startswith(b"/"):
        raise BadRequest(LAYER, "the request-target must be an absolute path (origin-form)")
    if b"#" in target:
        raise BadRequest(LAYER, "the request-target must not contain a fragment (#)")
    raw_path, _, query = target.partition(b"?")
    return canonical_path(raw_path), query
