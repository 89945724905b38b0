"""Security response headers: the fields added to, and removed from, each response.

Which value wins when the upstream sent the same field:

- Strict-Transport-Security and X-Content-Type-Options are the gateway's.
  An upstream's copy is removed whenever the gateway writes the field, and
  also on plain-HTTP listeners when HSTS is enabled, since HSTS describes
  the gateway's listener, which the upstream cannot see.
- Referrer-Policy, Content-Security-Policy and X-Frame-Options describe the
  upstream's pages, so an upstream's value is kept and the gateway adds its
  own only where the upstream sent none. With `replace_upstream` the
  gateway's value replaces the upstream's.
- A field turned off in the configuration (`null` or false) passes through
  from the upstream unchanged.

The gateway therefore never sends a field twice unless the upstream itself did.
"""

from __future__ import annotations

from ringwall.config.response import SecurityHeadersConfig

Fields = tuple[tuple[bytes, bytes], ...]

_HTML_TYPES = frozenset({b"text/html", b"application/xhtml+xml"})

# Action of `apply` on an upstream field, by lowercase name. Fields with
# no entry are kept unchanged.
_DROP = 0
_CONTENT_TYPE = 1
# Kept, and recorded in a bit mask of upstream fields the gateway must not duplicate.
_SEEN_REFERRER = 2
_SEEN_CSP = 4
_SEEN_FRAME = 8
_HTML_ONLY = _SEEN_CSP | _SEEN_FRAME


def is_html(content_type: bytes) -> bool:
    """Return whether a Content-Type value names an HTML document type."""
    return content_type.split(b";", 1)[0].strip(b" \t").lower() in _HTML_TYPES


class SecurityHeaders:
    """The security headers of one route on one listener, encoded in advance."""

    __slots__ = ("_actions", "_always", "_frame", "_html", "_referrer", "_removed", "_replace")

    def __init__(self, config: SecurityHeadersConfig, https: bool) -> None:
        always: list[tuple[bytes, bytes]] = []
        actions: dict[bytes, int] = {b"content-type": _CONTENT_TYPE}
        # Fields removed from every response, interim (1xx) ones included.
        removed: set[bytes] = set()
        if config.remove_server_header:
            removed.add(b"server")
        if config.remove_powered_by:
            removed.add(b"x-powered-by")

        hsts = config.hsts
        if hsts.enabled:
            actions[b"strict-transport-security"] = _DROP
            if https:
                value = f"max-age={int(hsts.max_age)}"
                if hsts.include_subdomains:
                    value += "; includeSubDomains"
                if hsts.preload:
                    value += "; preload"
                always.append((b"Strict-Transport-Security", value.encode()))
        if config.x_content_type_options:
            actions[b"x-content-type-options"] = _DROP
            always.append((b"X-Content-Type-Options", b"nosniff"))

        self._referrer: Fields = ()
        if config.referrer_policy is not None:
            actions[b"referrer-policy"] = _DROP if config.replace_upstream else _SEEN_REFERRER
            self._referrer = ((b"Referrer-Policy", config.referrer_policy.encode()),)
        # CSP and X-Frame-Options are recorded even with `replace_upstream`,
        # because an upstream's copy is replaced only on an HTML response,
        # which is known once Content-Type has been read.
        self._html: Fields = ()
        if config.content_security_policy is not None:
            actions[b"content-security-policy"] = _SEEN_CSP
            self._html = ((b"Content-Security-Policy", config.content_security_policy.encode()),)
        self._frame: Fields = ()
        if config.frame_options is not None:
            actions[b"x-frame-options"] = _SEEN_FRAME
            self._frame = ((b"X-Frame-Options", config.frame_options.encode()),)

        for name in removed:
            actions[name] = _DROP
        self._actions = actions
        self._always: Fields = tuple(always)
        self._removed = frozenset(removed)
        self._replace = config.replace_upstream

    def apply(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Return the response fields to send: `headers` with fields removed and added.

        `headers` is not modified. Interim responses (status below 200) only
        lose the removed fields (Server, X-Powered-By), because their fields
        do not apply to the final response.
        """
        if status < 200:
            removed = self._removed
            return [field for field in headers if field[0].lower() not in removed]

        actions = self._actions
        fields: list[tuple[bytes, bytes]] = []
        seen = 0
        html = False
        for field in headers:
            action = actions.get(field[0].lower())
            if action is None:
                fields.append(field)
            elif action == _CONTENT_TYPE:
                fields.append(field)
                # With several Content-Type fields, any HTML one counts, so
                # the policy errs towards adding CSP.
                html = html or is_html(field[1])
            elif action != _DROP:
                fields.append(field)
                seen |= action

        fields.extend(self._always)
        if not seen & _SEEN_REFERRER:
            fields.extend(self._referrer)
        if html:
            if self._replace and seen & _HTML_ONLY:
                fields = self._without_upstream_html_fields(fields, seen)
                seen &= ~_HTML_ONLY
            if not seen & _SEEN_CSP:
                fields.extend(self._html)
            if not seen & _SEEN_FRAME:
                fields.extend(self._frame)
        return fields

    def _without_upstream_html_fields(
        self, fields: list[tuple[bytes, bytes]], seen: int
    ) -> list[tuple[bytes, bytes]]:
        names = set()
        if seen & _SEEN_CSP:
            names.add(b"content-security-policy")
        if seen & _SEEN_FRAME:
            names.add(b"x-frame-options")
        return [field for field in fields if field[0].lower() not in names]
