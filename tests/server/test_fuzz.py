"""Fuzzing the HTTP API over raw sockets: whatever the request, no 5xx and no traceback."""

from __future__ import annotations

import socket
import urllib.parse
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

text = st.text(max_size=40)
names = st.one_of(text, st.sampled_from(["a", "a/b", "..", "a\nb", "/", "./x", "x" * 5000, "é/ü", "a\x00b"]))
ranges = st.one_of(st.none(), text, st.from_regex(r"bytes=[0-9²٣]{0,4}-[0-9²٣]{0,4}", fullmatch=True))
origins = st.one_of(st.none(), text, st.sampled_from(["null", "https://evil.example", "http://127.0.0.1"]))
request_parts = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "POST", "DELETE", "PUT", "HEAD", "OPTIONS", "PATCH"]),
        "path": st.sampled_from(["/files", "/files/", "/stats", "/activity", "/healthz", "/", "/nothing"]),
        "name": names,
        "query": st.dictionaries(st.sampled_from(["name", "prefix", "version", "versions", "x"]), text, max_size=3),
        "range": ranges,
        "origin": origins,
        "host": st.one_of(st.none(), text),
        "fetch_site": st.one_of(st.none(), st.sampled_from(["cross-site", "same-site", "same-origin", "none"])),
        "content_length": st.one_of(st.none(), st.sampled_from(["-1", "²", "abc", "99999999999999999999"])),
        "body": st.binary(max_size=300),
    }
)


def _header_value(value: str) -> bytes:
    return value.encode("utf-8", "replace").replace(b"\r", b"").replace(b"\n", b"")


def _request(parts: dict, netloc: str) -> bytes:
    path = parts["path"]
    if path == "/files/":
        path += urllib.parse.quote(parts["name"], safe="/")
    query = urllib.parse.urlencode(parts["query"])
    lines = [
        f"{parts['method']} {path}{'?' + query if query else ''} HTTP/1.1".encode(),
        b"Host: " + _header_value(netloc if parts["host"] is None else parts["host"]),
        b"Connection: close",
    ]
    for header, key in (("Range", "range"), ("Origin", "origin"), ("Sec-Fetch-Site", "fetch_site")):
        if parts[key] is not None:
            lines.append(header.encode() + b": " + _header_value(parts[key]))
    length = parts["content_length"] or str(len(parts["body"]))
    lines.append(b"Content-Length: " + length.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + parts["body"]


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory):
    from .serverprocess import ServerProcess, init_store

    url = init_store(tmp_path_factory.mktemp("fuzz") / "store", "4K")
    server = ServerProcess(url, library_settings={"body_timeout_seconds": 2}).start()
    yield server
    server.stop()


@settings(max_examples=300, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=request_parts)
def test_no_request_makes_the_server_fail(fuzzed_server, parts):
    address = urlsplit(fuzzed_server.base_url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(_request(parts, address.netloc))
        connection.shutdown(socket.SHUT_WR)
        response = b""
        while piece := connection.recv(65536):
            response += piece
    if response:  # nothing back: the server saw the client leave mid-body
        status = int(response.split(b" ", 2)[1])
        assert status < 500, response[:500]
    assert "Traceback" not in fuzzed_server.log
