"""HTTP/2 from clients through a real worker, with h2 as the client."""

from __future__ import annotations

import gc
import json
import socket
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import h2.errors
import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    SettingsFrame,
)

from ringwall.config.tls import Http2Config
from tests.support.gateway_thread import (
    VALIDATED_ORDERS_ROUTE,
    GatewayThread,
    gateway_config,
    running_gateway,
)
from tests.support.h2_client import (
    PREFACE,
    H2Client,
    read_raw_frames,
    serving_h2,
    tls_client_context,
    tls_server_context,
)
from tests.support.raw_upstream import RawUpstream, running_raw_upstream
from tests.support.tls import make_tls_files

ErrorCodes = h2.errors.ErrorCodes

API_ROUTE = """\
  - name: api
    path: /api
    upstream: app
    auth: none"""


def config_text(upstream_port: int) -> str:
    return gateway_config(upstream_port, API_ROUTE)


@pytest.fixture
def gateway(upstream: RawUpstream, tmp_path: Path) -> Iterator[GatewayThread]:
    with running_gateway(config_text(upstream.port), tmp_path) as running:
        yield running


@contextmanager
def connect(
    gateway: GatewayThread, settings: Http2Config | None = None, *, validate: bool = True
) -> Iterator[H2Client]:
    """Serve HTTP/2 from `gateway` with `settings` and yield a client connected to it."""
    with serving_h2(gateway, settings=settings) as port:
        client = H2Client(port, validate=validate)
        try:
            yield client
        finally:
            client.close()


@pytest.fixture
def client(gateway: GatewayThread) -> Iterator[H2Client]:
    with connect(gateway) as connected:
        yield connected


@pytest.fixture
def loose_client(gateway: GatewayThread) -> Iterator[H2Client]:
    """A client whose h2 sends malformed header blocks as given."""
    with connect(gateway, validate=False) as connected:
        yield connected


def parse_frames(data: bytes) -> list[Frame]:
    frames = []
    view = memoryview(data)
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(view[:9])
        if len(view) < 9 + length:
            break
        frame.parse_body(view[9 : 9 + length])
        frames.append(frame)
        view = view[9 + length :]
    return frames


def goaway_of(frames: list[Frame]) -> GoAwayFrame:
    goaways = [frame for frame in frames if isinstance(frame, GoAwayFrame)]
    assert goaways, f"no GOAWAY among {[type(frame).__name__ for frame in frames]}"
    return goaways[-1]


def problem(body: bytes) -> dict[str, object]:
    document = json.loads(body)
    assert isinstance(document, dict)
    return document


# -- forwarding --


def test_get_forwarded(client: H2Client, upstream: RawUpstream, gateway: GatewayThread) -> None:
    response = client.response(client.request(b"GET", b"/api/items?page=2"))

    assert response.status == 200
    assert response.body == b"ok"
    assert response.header(b"content-length") == [b"2"]
    assert response.header(b"x-request-id")
    names = [name for name, _ in response.headers]
    assert all(name == name.lower() for name in names)
    assert b"connection" not in names
    [recorded] = upstream.wait_for_requests(1)
    assert recorded.request.method == b"GET"
    assert recorded.request.target == b"/api/items?page=2"
    assert (b"x-forwarded-host", b"app") in recorded.request.headers
    records = gateway.access_records()
    assert records[-1]["status"] == 200
    assert records[-1]["method"] == "GET"


def test_post_forwarded_with_body(client: H2Client, upstream: RawUpstream) -> None:
    stream_id = client.request(
        b"POST", b"/api/orders", [(b"content-type", b"text/plain")], body=b"hello"
    )
    response = client.response(stream_id)

    assert response.status == 200
    [recorded] = upstream.wait_for_requests(1)
    assert recorded.request.method == b"POST"
    assert recorded.body == b"hello"
    assert (b"content-length", b"5") in recorded.request.headers


def test_post_with_length_forwarded(client: H2Client, upstream: RawUpstream) -> None:
    stream_id = client.request(b"POST", b"/api/orders", [(b"content-length", b"5")], body=b"hello")

    assert client.response(stream_id).status == 200
    [recorded] = upstream.wait_for_requests(1)
    assert recorded.body == b"hello"
    assert (b"content-length", b"5") in recorded.request.headers


@pytest.mark.parametrize("with_length", [True, False])
def test_json_body_validated(upstream: RawUpstream, tmp_path: Path, with_length: bool) -> None:
    config = gateway_config(upstream.port, f"{API_ROUTE}\n{VALIDATED_ORDERS_ROUTE}")
    with running_gateway(config, tmp_path) as gateway, connect(gateway) as client:
        responses = []
        for body in (b'{"quantity": 0}', b'{"quantity": 2}'):
            fields = [(b"content-type", b"application/json")]
            if with_length:
                fields.append((b"content-length", b"%d" % len(body)))
            responses.append(client.response(client.request(b"POST", b"/orders", fields, body)))

    assert responses[0].status == 400
    assert problem(responses[0].body)["layer"] == "validation"
    assert responses[1].status == 200
    [recorded] = upstream.wait_for_requests(1)
    assert recorded.body == b'{"quantity": 2}'


def wait_for_window(client: H2Client, stream_id: int, size: int) -> None:
    def window_open() -> bool:
        return client.connection.local_flow_control_window(stream_id) >= size

    client.read_until(window_open)
    assert window_open(), "the gateway gave back no flow-control window"


def test_post_body_larger_than_window(upstream: RawUpstream, tmp_path: Path) -> None:
    body = bytes(range(256)) * 12_000  # about 3 MB, three times the default window
    config = config_text(upstream.port).replace(
        "timeouts: {drain: 2s}", "timeouts: {drain: 2s}\n  limits: {max_body_bytes: 16MiB}"
    )
    with running_gateway(config, tmp_path) as gateway, connect(gateway) as client:
        stream_id = client.request(b"POST", b"/api/upload", end=False)
        for start in range(0, len(body), 16_384):
            wait_for_window(client, stream_id, 16_384)
            client.connection.send_data(stream_id, body[start : start + 16_384])
            client.flush()
        client.connection.end_stream(stream_id)
        client.flush()
        response = client.response(stream_id, timeout=15)

        assert response.status == 200
    [recorded] = upstream.wait_for_requests(1)
    assert recorded.body == body


def test_post_body_in_parts(client: H2Client, upstream: RawUpstream) -> None:
    stream_id = client.request(b"POST", b"/api/orders", body=b"part one, ", end=False)
    client.connection.send_data(stream_id, b"part two", end_stream=True)
    client.flush()
    response = client.response(stream_id)

    assert response.status == 200
    [recorded] = upstream.wait_for_requests(1)
    assert recorded.body == b"part one, part two"


def test_large_response_respects_flow_control(tmp_path: Path) -> None:
    body = b"x" * 300_000
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    with (
        running_raw_upstream(head + body) as large,
        running_gateway(config_text(large.port), tmp_path) as gateway,
        connect(gateway) as client,
    ):
        response = client.response(client.request())

    assert response.status == 200
    assert len(response.body) == len(body)


def test_chunked_response_relayed(tmp_path: Path) -> None:
    chunked = (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n"
        b"X-Upstream: yes\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    with (
        running_raw_upstream(chunked) as upstream,
        running_gateway(config_text(upstream.port), tmp_path) as gateway,
        connect(gateway) as client,
    ):
        response = client.response(client.request())

    assert response.status == 201
    assert response.body == b"hello world"
    assert response.header(b"x-upstream") == [b"yes"]
    assert response.header(b"transfer-encoding") == []
    assert response.header(b"connection") == []


def test_head_request_no_body(client: H2Client) -> None:
    response = client.response(client.request(b"HEAD"))

    assert response.status == 200
    assert response.body == b""
    assert response.ended


def test_concurrent_streams(client: H2Client, upstream: RawUpstream) -> None:
    stream_ids = [client.request(path=b"/api/items/%d" % index) for index in range(10)]
    responses = [client.response(stream_id) for stream_id in stream_ids]

    assert [response.status for response in responses] == [200] * 10
    targets = sorted(recorded.request.target for recorded in upstream.wait_for_requests(10))
    assert targets == sorted(b"/api/items/%d" % index for index in range(10))


def test_over_tls_with_alpn(upstream: RawUpstream, tmp_path: Path) -> None:
    ca_file, cert_file, key_file = make_tls_files(tmp_path)
    server_context = tls_server_context(str(cert_file), str(key_file))
    with (
        running_gateway(config_text(upstream.port), tmp_path) as gateway,
        serving_h2(gateway, tls=server_context) as port,
    ):
        client = H2Client(port, tls=tls_client_context(str(ca_file)))
        try:
            response = client.response(client.request())
        finally:
            client.close()

    assert response.status == 200
    assert response.body == b"ok"


# -- rejections --


def test_rejection_keeps_connection_usable(client: H2Client, gateway: GatewayThread) -> None:
    rejected = client.response(client.request(path=b"/elsewhere"))

    assert rejected.status == 404
    assert rejected.header(b"content-type") == [b"application/problem+json"]
    document = problem(rejected.body)
    assert document["status"] == 404
    assert document["layer"] == "routing"
    later = client.response(client.request())
    assert later.status == 200
    records = gateway.access_records()
    assert records[0]["status"] == 404
    assert records[0]["layer"] == "routing"
    assert records[0]["reason"]


def test_invalid_authority_400(loose_client: H2Client) -> None:
    response = loose_client.response(loose_client.request(authority=b"user@app"))

    assert response.status == 400
    assert problem(response.body)["layer"] == "protocol"
    assert loose_client.response(loose_client.request()).status == 200


def test_host_differing_from_authority_400(loose_client: H2Client) -> None:
    stream_id = loose_client.request(headers=[(b"host", b"other")])

    assert loose_client.response(stream_id).status == 400


@pytest.mark.parametrize(
    "field",
    [
        (b"connection", b"keep-alive"),
        (b"keep-alive", b"timeout=5"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"websocket"),
        (b"te", b"gzip"),
    ],
)
def test_connection_specific_field_400(loose_client: H2Client, field: tuple[bytes, bytes]) -> None:
    response = loose_client.response(loose_client.request(headers=[field]))

    assert response.status == 400
    assert field[0].decode() in str(problem(response.body)["detail"])
    assert loose_client.response(loose_client.request()).status == 200


def test_te_trailers_allowed(client: H2Client) -> None:
    response = client.response(client.request(headers=[(b"te", b"trailers")]))

    assert response.status == 200


@pytest.mark.parametrize(
    "fields",
    [
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"app")],
        [(b":method", b"GET"), (b":path", b"/api/x"), (b":authority", b"app")],
        [(b":scheme", b"https"), (b":path", b"/api/x"), (b":authority", b"app")],
        [(b":method", b"GET"), (b":scheme", b"ftp"), (b":path", b"/api/x"), (b":authority", b"a")],
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/api/x"), (b":a", b"b")],
        [(b":method", b"GET"), (b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")],
        [(b":method", b"GET"), (b":scheme", b"https"), (b"x-a", b"1"), (b":path", b"/api/x")],
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/api/a b")],
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/api/x"), (b"X-Up", b"1")],
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/api/x"), (b"x-a", b" 1")],
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/api/x"), (b"x-a", b"1\r\n")],
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/api/x")],  # no authority
    ],
)
def test_malformed_request_400(loose_client: H2Client, fields: list[tuple[bytes, bytes]]) -> None:
    stream_id = loose_client.connection.get_next_available_stream_id()
    loose_client.send_headers(stream_id, fields)

    assert loose_client.response(stream_id).status == 400
    assert loose_client.response(loose_client.request()).status == 200


def test_connect_method_405(loose_client: H2Client) -> None:
    stream_id = loose_client.connection.get_next_available_stream_id()
    loose_client.send_headers(stream_id, [(b":method", b"CONNECT"), (b":authority", b"app:443")])

    assert loose_client.response(stream_id).status == 405


def test_content_length_without_body_400(loose_client: H2Client) -> None:
    response = loose_client.response(loose_client.request(headers=[(b"content-length", b"5")]))

    assert response.status == 400


def test_body_over_limit_413(upstream: RawUpstream, tmp_path: Path) -> None:
    config = config_text(upstream.port).replace(
        "timeouts: {drain: 2s}", "timeouts: {drain: 2s}\n  limits: {max_body_bytes: 1KiB}"
    )
    with running_gateway(config, tmp_path) as gateway, connect(gateway) as client:
        stream_id = client.request(b"POST", b"/api/orders", body=b"x" * 5000)
        response = client.response(stream_id)

        assert response.status == 413
        assert client.response(client.request()).status == 200
    assert upstream.requests[-1].request.method == b"GET"


# -- protections --


def test_streams_over_limit_refused(gateway: GatewayThread) -> None:
    settings = Http2Config(max_concurrent_streams=2)
    with connect(gateway, settings) as client:
        # Sent in one write, before the server's SETTINGS arrive (so h2 does not
        # hold them back) and before the first two can finish.
        stream_ids = [1, 3, 5, 7]
        for stream_id in stream_ids:
            client.connection.send_headers(
                stream_id, request_fields(b"/api/items"), end_stream=True
            )
        client.flush()
        responses = [client.response(stream_id) for stream_id in stream_ids]

        assert [response.status for response in responses[:2]] == [200, 200]
        assert [response.reset_code for response in responses[2:]] == [
            ErrorCodes.REFUSED_STREAM,
            ErrorCodes.REFUSED_STREAM,
        ]
        assert client.response(client.request()).status == 200


def request_fields(path: bytes) -> list[tuple[bytes, bytes]]:
    return [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"app"), (b":path", path)]


def test_rapid_reset_goaway(gateway: GatewayThread) -> None:
    settings = Http2Config(max_reset_streams=10)
    with connect(gateway, settings) as client:
        for _ in range(30):
            stream_id = client.connection.get_next_available_stream_id()
            client.connection.send_headers(stream_id, request_fields(b"/api/items"))
            client.connection.reset_stream(stream_id, ErrorCodes.CANCEL)
        with suppress(OSError):  # the server may already have closed the connection
            client.flush()
        client.wait_closed()

        assert client.closed
        assert client.terminated is not None
        assert client.terminated.error_code == ErrorCodes.ENHANCE_YOUR_CALM


def test_reset_streams_over_cap_goaway(gateway: GatewayThread) -> None:
    # Streams over the cap, each reset by the client in the same write: the
    # server refuses a stream that is already closed, which must not fail.
    settings = Http2Config(max_concurrent_streams=5, max_reset_streams=20)
    with connect(gateway, settings) as client:
        client.connection.remote_settings.max_concurrent_streams = 10_000
        for _ in range(40):
            stream_id = client.connection.get_next_available_stream_id()
            client.connection.send_headers(
                stream_id, request_fields(b"/api/items"), end_stream=True
            )
            client.connection.reset_stream(stream_id, ErrorCodes.CANCEL)
        with suppress(OSError):  # the server may already have closed the connection
            client.flush()
        client.wait_closed()

        assert client.terminated is not None
        assert client.terminated.error_code == ErrorCodes.ENHANCE_YOUR_CALM


def raw_connection(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(PREFACE + SettingsFrame(0).serialize())
    return sock


def request_block() -> bytes:
    return hpack.Encoder().encode(
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"app"), (b":path", b"/")]
    )


def test_continuation_flood_goaway(gateway: GatewayThread) -> None:
    settings = Http2Config(max_continuation_frames=5)
    with serving_h2(gateway, settings=settings) as port:
        sock = raw_connection(port)
        headers = HeadersFrame(1)
        headers.data = request_block()
        frames = [headers.serialize()]
        # Six CONTINUATION frames: past this limit, below h2's own of 64.
        for _ in range(6):
            continuation = ContinuationFrame(1)
            continuation.data = b"\x00" * 100
            frames.append(continuation.serialize())
        sock.sendall(b"".join(frames))
        received = parse_frames(read_raw_frames(sock))
        sock.close()

    goaway = goaway_of(received)
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert goaway.last_stream_id == 0


def test_continuation_flood_cut_off_early(gateway: GatewayThread) -> None:
    with serving_h2(gateway) as port:
        sock = raw_connection(port)
        headers = HeadersFrame(1)
        headers.data = request_block()
        sock.sendall(headers.serialize())
        continuation = ContinuationFrame(1)
        continuation.data = b"\x00" * 16_384
        frame = continuation.serialize()
        sent = 0
        with pytest.raises(OSError):
            # 1,000 frames are 16 MB, more than loopback buffers hold, so the
            # sends fail once the server has closed the connection.
            for sent in range(1, 1001):  # noqa: B007
                sock.sendall(frame)
        sock.close()

    assert sent < 1000


def test_abuse_keeps_memory_flat(gateway: GatewayThread) -> None:
    # Python-level allocations only (tracemalloc), which is where h2 and the
    # frame guard would buffer frames. The gateway runs in this process.
    rapid_reset = Http2Config(max_reset_streams=10)
    continuation = ContinuationFrame(1)
    continuation.data = b"\x00" * 16_384
    frame = continuation.serialize()
    headers = HeadersFrame(1)
    headers.data = request_block()
    sent = 0
    tracemalloc.start()
    try:
        with connect(gateway) as client:
            assert client.response(client.request()).status == 200
        gc.collect()
        baseline, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(10):
            with connect(gateway, rapid_reset) as client:
                for _ in range(30):
                    stream_id = client.connection.get_next_available_stream_id()
                    client.connection.send_headers(stream_id, request_fields(b"/api/items"))
                    client.connection.reset_stream(stream_id, ErrorCodes.CANCEL)
                with suppress(OSError):
                    client.flush()
                client.wait_closed()
        with serving_h2(gateway) as port:
            for _ in range(10):
                sock = raw_connection(port)
                with suppress(OSError):
                    sock.sendall(headers.serialize())
                    for _ in range(256):  # 4 MiB per connection
                        sock.sendall(frame)
                        sent += len(frame)
                sock.close()
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert sent >= 10 * len(frame)  # each flood got past its first frame
    assert peak - baseline < 8 << 20
    assert current - baseline < 1 << 20


def test_oversize_frame_goaway(gateway: GatewayThread) -> None:
    with serving_h2(gateway) as port:
        sock = raw_connection(port)
        # Only the header of a frame that declares 1 MiB: the guard must not wait for its payload.
        sock.sendall((1 << 20).to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big"))
        received = parse_frames(read_raw_frames(sock))
        sock.close()

    assert goaway_of(received).error_code == ErrorCodes.FRAME_SIZE_ERROR


def test_header_list_over_limit_431(gateway: GatewayThread) -> None:
    settings = Http2Config(max_header_list_size=1024)
    with connect(gateway, settings) as client:
        response = client.response(client.request(headers=[(b"x-large", b"v" * 1500)]))

        assert response.status == 431
        assert client.response(client.request()).status == 200


def test_header_list_far_over_limit_goaway(gateway: GatewayThread) -> None:
    settings = Http2Config(max_header_list_size=1024)
    with connect(gateway, settings) as client:
        client.request(headers=[(b"x-large", b"v" * 3000)])
        client.wait_closed()

        assert client.terminated is not None
        assert client.terminated.error_code == ErrorCodes.ENHANCE_YOUR_CALM


def test_refused_client_gets_rejection(upstream: RawUpstream, tmp_path: Path) -> None:
    config = config_text(upstream.port) + "limits:\n  connections: {per_ip: 1}\n"
    with running_gateway(config, tmp_path) as gateway, serving_h2(gateway) as port:
        first = H2Client(port)
        second = H2Client(port)
        try:
            assert first.response(first.request()).status == 200
            refused = second.response(second.request())
            assert refused.status == 429
            second.wait_closed()
            assert second.closed
        finally:
            first.close()
            second.close()


def test_drain_closes_idle_connection(gateway: GatewayThread, client: H2Client) -> None:
    assert client.response(client.request()).status == 200
    worker = gateway.worker
    assert worker is not None
    [connection] = worker.connections

    def drain() -> None:
        # What Worker.drain does to each connection first.
        connection.closing = True
        if connection.idle():
            connection.close()

    gateway.call(drain)
    client.wait_closed()

    assert client.closed
    assert client.terminated is not None
    assert client.terminated.error_code == ErrorCodes.NO_ERROR
    assert not worker.connections


# -- deadlines --


def short_timeouts(upstream: RawUpstream) -> str:
    return config_text(upstream.port).replace(
        "timeouts: {drain: 2s}", "timeouts: {drain: 2s, head: 1s, idle: 1s, body_idle: 1s}"
    )


def test_silent_client_closed(upstream: RawUpstream, tmp_path: Path) -> None:
    with running_gateway(short_timeouts(upstream), tmp_path) as gateway, connect(gateway) as client:
        client.wait_closed(timeout=10)

        assert client.closed


def test_unfinished_header_block_goaway(upstream: RawUpstream, tmp_path: Path) -> None:
    with (
        running_gateway(short_timeouts(upstream), tmp_path) as gateway,
        serving_h2(gateway) as port,
    ):
        sock = raw_connection(port)
        headers = HeadersFrame(1)
        headers.data = request_block()
        sock.sendall(headers.serialize())
        received = parse_frames(read_raw_frames(sock, timeout=10))
        sock.close()

    assert goaway_of(received).error_code == ErrorCodes.PROTOCOL_ERROR


def test_stalled_body_408(upstream: RawUpstream, tmp_path: Path) -> None:
    with running_gateway(short_timeouts(upstream), tmp_path) as gateway, connect(gateway) as client:
        stream_id = client.request(b"POST", b"/api/orders", body=b"start", end=False)
        response = client.response(stream_id, timeout=10)

        assert response.status == 408
        assert problem(response.body)["status"] == 408
    assert upstream.requests == []
