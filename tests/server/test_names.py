"""Bad requests get 4xx, never 500: names, Range, and the schema's patterns against normalize_name."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from chunkstore.apps.server.app import NAME_PATTERN, PREFIX_PATTERN
from chunkstore.core.names import normalize_name, normalize_prefix
from chunkstore.errors import InvalidArgumentError


def _accepts(check, text: str) -> bool:
    try:
        check(text)
    except InvalidArgumentError:
        return False
    return True


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=["a", "/", ".", "\x00", "\n", "é"], max_size=12))
def test_schema_patterns_describe_the_name_validator(text):
    assert bool(re.fullmatch(NAME_PATTERN, text)) == _accepts(normalize_name, text), text
    assert bool(re.fullmatch(PREFIX_PATTERN, text)) == _accepts(normalize_prefix, text), text


def test_names_with_newlines_can_be_read_and_deleted(server):
    with server.client() as client:
        stored = client.post("/files", params={"name": "line\nbreak"}, content=b"x").json()["name"]
        plain = client.post("/files", params={"name": "trail"}, content=b"plain").json()["name"]
        assert stored == "line\nbreak" and plain == "trail"
        assert client.get("/files/line%0Abreak").content == b"x"
        # A trailing newline is part of the name, not dropped before the end of the path.
        assert client.get("/files/trail%0A").status_code == 404
        assert client.delete("/files/line%0Abreak").status_code == 200
        assert [entry["name"] for entry in client.get("/files").json()["files"]] == ["trail"]


def test_bad_names_are_400_with_the_error_schema(server):
    with server.client() as client:
        for response in (
            client.post("/files", params={"name": "../x"}, content=b"x"),
            client.post("/files", params={"name": "a" * 5000}, content=b"x"),
            client.get("/files", params={"prefix": "a/../b"}),
            client.post("/files", content=b"x"),
            client.get("/files/x", params={"version": "0"}),
        ):
            assert response.status_code == 400, response.text
            assert set(response.json()) == {"code", "message"}


def test_non_ascii_digits_in_range(server):
    with server.client() as client:
        client.post("/files", params={"name": "r"}, content=b"0123456789")
        # Headers arrive as Latin-1: byte 0xB2 is '²', which str.isdigit and int() accept.
        for header in ("bytes=²-", "bytes=-²", "bytes=1-²"):
            response = client.get("/files/r", headers={"Range": header.encode("latin-1")})
            assert response.status_code == 200 and response.content == b"0123456789", header
    assert "Traceback" not in server.log
