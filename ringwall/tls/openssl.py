"""The few OpenSSL settings that Python's `ssl` module does not expose, set through ctypes.

CPython 3.11's `ssl` cannot limit the key-exchange groups, set session
ticket keys, set a session id context or a session timeout, or change the
verify mode of a connection after the SNI callback moved it to another
context. OpenSSL can do all of these through the `SSL_CTX` and `SSL`
pointers stored in CPython's objects. The functions are looked up in the
`_ssl` module's own libssl, so they act on the same library copy.

The pointers are read from CPython's object layout (`PySSLContext` and
`PySSLSocket` in Modules/_ssl.c: the pointer follows the object header).
`available()` checks that layout on a real object once, and every caller
has a documented fallback for when the check fails.
"""

from __future__ import annotations

import _ssl
import ctypes
import ssl
import sys
from functools import cache

# From OpenSSL 3.0's ssl.h and tls1.h.
_SSL_CTRL_SET_TLSEXT_TICKET_KEYS = 59
_SSL_CTRL_SET_GROUPS_LIST = 92
SSL_VERIFY_NONE = 0x00
SSL_VERIFY_PEER = 0x01
SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 0x02
# From x509_vfy.h: check the leaf certificate against the CRLs in the store.
_X509_V_FLAG_CRL_CHECK = 0x4
# 16 bytes of key name, 32 of HMAC secret and 32 of AES key.
TICKET_KEYS_LENGTH = 80

# The object header of a non-debug CPython build: reference count and type.
_HEADER = ctypes.sizeof(ctypes.c_ssize_t) + ctypes.sizeof(ctypes.c_void_p)


class _Library:
    def __init__(self) -> None:
        library = ctypes.CDLL(_ssl.__file__)
        self.ctx_ctrl = library.SSL_CTX_ctrl
        self.ctx_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        self.ctx_ctrl.restype = ctypes.c_long
        self.ctx_get_options = library.SSL_CTX_get_options
        self.ctx_get_options.argtypes = [ctypes.c_void_p]
        self.ctx_get_options.restype = ctypes.c_uint64
        self.ctx_set_timeout = library.SSL_CTX_set_timeout
        self.ctx_set_timeout.argtypes = [ctypes.c_void_p, ctypes.c_long]
        self.ctx_set_timeout.restype = ctypes.c_long
        self.ctx_set_session_id_context = library.SSL_CTX_set_session_id_context
        self.ctx_set_session_id_context.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_uint,
        ]
        self.ctx_set_session_id_context.restype = ctypes.c_int
        self.get_ssl_ctx = library.SSL_get_SSL_CTX
        self.get_ssl_ctx.argtypes = [ctypes.c_void_p]
        self.get_ssl_ctx.restype = ctypes.c_void_p
        self.set_verify = library.SSL_set_verify
        self.set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        self.set_verify.restype = None
        self.set_options = library.SSL_set_options
        self.set_options.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
        self.set_options.restype = ctypes.c_uint64
        self.set_num_tickets = library.SSL_set_num_tickets
        self.set_num_tickets.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.set_num_tickets.restype = ctypes.c_int
        self.ctx_get_cert_store = library.SSL_CTX_get_cert_store
        self.ctx_get_cert_store.argtypes = [ctypes.c_void_p]
        self.ctx_get_cert_store.restype = ctypes.c_void_p
        # In libcrypto, which dlsym finds through libssl's dependencies.
        self.store_set_flags = library.X509_STORE_set_flags
        self.store_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        self.store_set_flags.restype = ctypes.c_int
        self.store_add_crl = library.X509_STORE_add_crl
        self.store_add_crl.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.store_add_crl.restype = ctypes.c_int
        self.d2i_crl = library.d2i_X509_CRL
        self.d2i_crl.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long]
        self.d2i_crl.restype = ctypes.c_void_p
        self.crl_free = library.X509_CRL_free
        self.crl_free.argtypes = [ctypes.c_void_p]
        self.crl_free.restype = None


@cache
def _library() -> _Library | None:
    if hasattr(sys, "gettotalrefcount"):
        return None  # a debug build has a longer object header
    try:
        library = _Library()
    except (OSError, AttributeError):
        return None
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    probe.options |= ssl.OP_NO_TICKET
    pointer = _pointer(probe)
    if not pointer or library.ctx_get_options(pointer) != int(probe.options):
        return None
    return library


def available() -> bool:
    """Return whether this CPython build's layout was recognized, so the setters work."""
    return _library() is not None


def _pointer(obj: object) -> int:
    value = ctypes.c_void_p.from_address(id(obj) + _HEADER).value
    return value or 0


def _require() -> _Library:
    library = _library()
    if library is None:
        raise RuntimeError("OpenSSL settings beyond the ssl module are not available in this build")
    return library


def set_groups(context: ssl.SSLContext, groups: str) -> None:
    """Limit the key-exchange groups, such as "X25519:P-256:P-384"."""
    library = _require()
    if library.ctx_ctrl(_pointer(context), _SSL_CTRL_SET_GROUPS_LIST, 0, groups.encode()) != 1:
        raise ValueError(f"OpenSSL rejected the group list {groups!r}")


def set_ticket_keys(context: ssl.SSLContext, keys: bytes) -> None:
    """Set the keys that encrypt session tickets, so other processes can resume them."""
    if len(keys) != TICKET_KEYS_LENGTH:
        raise ValueError(f"expected {TICKET_KEYS_LENGTH} bytes of ticket keys, got {len(keys)}")
    library = _require()
    buffer = ctypes.create_string_buffer(keys, TICKET_KEYS_LENGTH)
    if (
        library.ctx_ctrl(
            _pointer(context), _SSL_CTRL_SET_TLSEXT_TICKET_KEYS, TICKET_KEYS_LENGTH, buffer
        )
        != 1
    ):
        raise ValueError("OpenSSL rejected the session ticket keys")


def set_session_id_context(context: ssl.SSLContext, value: bytes) -> None:
    """Set the id that a session must carry to be resumed on this context (at most 32 bytes)."""
    library = _require()
    if library.ctx_set_session_id_context(_pointer(context), value, len(value)) != 1:
        raise ValueError("OpenSSL rejected the session id context")


def set_session_timeout(context: ssl.SSLContext, seconds: int) -> None:
    """Set how long a session, and so a ticket, can be resumed."""
    _require().ctx_set_timeout(_pointer(context), seconds)


def add_crls(context: ssl.SSLContext, crls: tuple[bytes, ...]) -> None:
    """Add DER-encoded CRLs to `context`'s certificate store, which then checks client certificates.

    The check is a flag of the store. `SSLContext.verify_flags` sets the
    flags of the context, which a connection copies when it is created, so
    they are lost when the SNI callback moves it to this context. The
    store's own flags still apply, because verification starts from the
    store of the connection's current context.
    """
    library = _require()
    store = library.ctx_get_cert_store(_pointer(context))
    if not store:
        raise RuntimeError("the TLS context has no certificate store")
    for der in crls:
        # d2i advances the pointer it is given, so it gets its own.
        cursor = ctypes.c_char_p(der)
        crl = library.d2i_crl(None, ctypes.byref(cursor), len(der))
        if not crl:
            raise RuntimeError("OpenSSL could not decode a CRL that cryptography had read")
        try:
            # The store takes its own reference to the CRL.
            if library.store_add_crl(store, crl) != 1:
                raise RuntimeError("the CRL could not be added to the TLS context's store")
        finally:
            library.crl_free(crl)
    if library.store_set_flags(store, _X509_V_FLAG_CRL_CHECK) != 1:
        raise RuntimeError("the CRL check could not be set on the TLS context's certificate store")


def ask_client_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket, mode: int) -> None:
    """Make one connection request a client certificate in its handshake, and issue no tickets.

    OpenSSL copies the verify mode and options into a connection when it is
    created, so a context chosen later by the SNI callback brings its
    certificate and CA store but not these. The connection gets no session
    ticket, so its client certificate is never resumed under another name.
    Raises RuntimeError when the connection's pointer does not lead back to
    its context.
    """
    library = _require()
    inner = ssl_object._sslobj  # type: ignore[union-attr]
    # PySSLSocket starts with a reference to the Python socket, then the SSL pointer.
    connection = ctypes.c_void_p.from_address(
        id(inner) + _HEADER + ctypes.sizeof(ctypes.c_void_p)
    ).value
    if not connection or library.get_ssl_ctx(connection) != _pointer(ssl_object.context):
        raise RuntimeError("the TLS connection's OpenSSL pointer was not found")
    library.set_verify(connection, mode, None)
    library.set_options(connection, ssl.OP_NO_TICKET)
    library.set_num_tickets(connection, 0)
