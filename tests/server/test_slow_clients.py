"""Slow and idle clients cannot hold the server: head and body timeouts, a connection cap."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import pytest

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
MAX_CONNECTIONS = 40
STALLED_UPLOADS = 4  # every upload slot
HALF_OPEN = 60  # more than the cap


@pytest.fixture
def guarded_server(start_server):
    return start_server(
        avg_size="4K",
        library_settings={
            "header_timeout_seconds": HEADER_TIMEOUT,
            "body_timeout_seconds": BODY_TIMEOUT,
            "max_connections": MAX_CONNECTIONS,
            "max_concurrent_uploads": STALLED_UPLOADS,
        },
    )


def _connect(address) -> socket.socket:
    connection = socket.create_connection((address.hostname, address.port), timeout=10)
    return connection


def _closed_within(connection: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed the connection within seconds, and what it sent before."""
    connection.settimeout(seconds)
    received = b""
    try:
        while piece := connection.recv(65536):
            received += piece
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        pass
    return True, received


def test_stalled_uploads_and_half_open_connections_do_not_stop_others(guarded_server):
    address = urlsplit(guarded_server.base_url)
    started = time.monotonic()
    stalled = []
    for index in range(STALLED_UPLOADS):
        connection = _connect(address)
        connection.sendall(
            f"POST /files?name=stalled{index} HTTP/1.1\r\nHost: {address.netloc}\r\n"
            "Content-Length: 1000000\r\n\r\n".encode()
            + b"x" * 1000
        )
        stalled.append(connection)
    half_open = []
    for _ in range(HALF_OPEN):
        connection = _connect(address)
        connection.sendall(f"GET /files HTTP/1.1\r\nHost: {address.netloc}\r\nX-Slow: ".encode())
        half_open.append(connection)
    try:
        # Past the cap, connections are closed at once with a JSON 503.
        refused = [_closed_within(connection, 0.5) for connection in half_open[MAX_CONNECTIONS:]]
        assert all(closed for closed, _ in refused)
        assert any(b"too_many_connections" in sent for _, sent in refused)
        # The others are closed when the head timeout passes; the stalled uploads get 408.
        for connection in half_open[: MAX_CONNECTIONS - STALLED_UPLOADS]:
            assert _closed_within(connection, HEADER_TIMEOUT + 5)[0]
        for connection in stalled:
            closed, sent = _closed_within(connection, BODY_TIMEOUT + 5)
            assert closed and sent.startswith(b"HTTP/1.1 408") and b"body_timeout" in sent
        assert time.monotonic() - started < BODY_TIMEOUT + 5
        with guarded_server.client(timeout=5) as client:
            asked = time.monotonic()
            assert client.get("/files").status_code == 200
            assert client.post("/files", params={"name": "after"}, content=b"served").status_code == 200
            assert time.monotonic() - asked < 2
            assert [entry["name"] for entry in client.get("/files").json()["files"]] == ["after"]
    finally:
        for connection in stalled + half_open:
            connection.close()
    assert "Traceback" not in guarded_server.log


def test_a_head_sent_byte_by_byte_is_cut_off(guarded_server):
    address = urlsplit(guarded_server.base_url)
    with _connect(address) as connection:
        started = time.monotonic()
        head = f"GET /files HTTP/1.1\r\nHost: {address.netloc}\r\n".encode() + b"X-Pad: " + b"a" * 100
        try:
            for byte in head:
                connection.sendall(bytes([byte]))
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert _closed_within(connection, HEADER_TIMEOUT + 5)[0]
        assert time.monotonic() - started < HEADER_TIMEOUT + 5
