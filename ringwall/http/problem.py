"""Render rejections as RFC 9457 problem details (`application/problem+json`)."""

from __future__ import annotations

import http
import json
from collections.abc import Sequence

from ringwall.errors import Rejection

# Python 3.11's HTTPStatus keeps RFC 7231 names for a few codes; RFC 9110 renamed them.
_RFC_9110_NAMES = {413: "Content Too Large", 414: "URI Too Long", 422: "Unprocessable Content"}
_PHRASES = {
    status.value: _RFC_9110_NAMES.get(status.value, status.phrase).encode("ascii")
    for status in http.HTTPStatus
}


def reason_phrase(status: int) -> bytes:
    """Return the standard reason phrase of `status`, or b"Unknown" for an unregistered code."""
    return _PHRASES.get(status, b"Unknown")


def problem_type(rejection: Rejection) -> str:
    slug = rejection.title.lower().replace(" ", "-")
    return f"urn:ringwall:problem:{slug}"


def problem_body(rejection: Rejection, request_id: str) -> bytes:
    document = {
        "type": problem_type(rejection),
        "title": rejection.title,
        "status": rejection.status,
        "detail": rejection.detail,
        "layer": rejection.layer,
        "request_id": request_id,
    }
    return json.dumps(document, ensure_ascii=True).encode("ascii")


def problem_response(
    rejection: Rejection,
    request_id: str,
    request_id_header: str,
    *,
    head_only: bool = False,
    close: bool = False,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """Return a complete HTTP/1.1 response for `rejection`, with `extra_headers` added."""
    body = problem_body(rejection, request_id)
    phrase = reason_phrase(rejection.status).decode("ascii")
    lines = [f"HTTP/1.1 {rejection.status} {phrase}"]
    lines.extend(
        f"{name}: {value}"
        for name, value in problem_fields(
            rejection, request_id, request_id_header, len(body), extra_headers
        )
    )
    if close or rejection.close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


def problem_fields(
    rejection: Rejection,
    request_id: str,
    request_id_header: str,
    body_length: int,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
) -> list[tuple[str, str]]:
    """Return the header fields of the response for `rejection`, without framing of the connection.

    A field of `extra_headers` whose name the rejection sets itself is left out.
    """
    fields = [
        ("Content-Type", "application/problem+json"),
        ("Content-Length", str(body_length)),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        (request_id_header, request_id),
    ]
    fields.extend(rejection.headers)
    own = {name.lower() for name, _ in rejection.headers}
    fields.extend(
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in extra_headers
        if name.decode("latin-1").lower() not in own
    )
    return fields
