"""Cross-site requests and DNS rebinding: Host and Origin checks, and where the server may listen."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from chunkstore import Store
from chunkstore.apps.server import ServerSettings, TokenSet, create_app
from chunkstore.apps.server.serving import check_listen_address
from chunkstore.errors import InvalidArgumentError

from .serverprocess import init_store


@pytest.fixture
def make_client(tmp_path):
    stores = []

    def make(**settings) -> TestClient:
        store = Store.open(init_store(tmp_path / f"store{len(stores)}", "4K"))
        stores.append(store)
        return TestClient(create_app(store, ServerSettings(**settings)), base_url="http://127.0.0.1:8080")

    yield make
    for store in stores:
        store.close()


def _names(client: TestClient) -> list[str]:
    return [entry["name"] for entry in client.get("/files").json()["files"]]


def test_form_posts_from_other_sites_are_refused(make_client):
    client = make_client()
    # What a page on another site makes the browser send: a simple multipart form POST.
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://localhost:8081", "Sec-Fetch-Site": "same-site"},
    ):
        response = client.post(
            "/files", params={"name": "planted"}, headers=headers, files={"file": ("x.txt", b"attack")}
        )
        assert response.status_code == 403, (headers, response.text)
        assert response.json()["code"] == "cross_origin"
    client.post("/files", params={"name": "keep"}, content=b"mine")
    refused_delete = client.delete("/files/keep", headers={"Origin": "https://evil.example"})
    assert refused_delete.status_code == 403
    assert _names(client) == ["keep"]


def test_own_origin_and_clients_without_origin_may_write(make_client):
    client = make_client(cors_origins=("https://app.example",))
    for name, headers in (
        ("own", {"Origin": "http://127.0.0.1:8080", "Sec-Fetch-Site": "same-origin"}),
        ("plain", {}),
        ("typed", {"Sec-Fetch-Site": "none"}),
        ("trusted", {"Origin": "https://app.example", "Sec-Fetch-Site": "cross-site"}),
    ):
        response = client.post("/files", params={"name": name}, content=b"x", headers=headers)
        assert response.status_code == 200, (name, response.text)
    # Reads from other origins are left to the browser's same-origin policy.
    assert client.get("/files", headers={"Origin": "https://evil.example"}).status_code == 200


def test_unknown_host_names_are_refused(make_client):
    client = make_client()
    client.post("/files", params={"name": "secret"}, content=b"x")
    for host in ("evil.example:8080", "evil.example", "localhost:9999", "127.0.0.1.evil.example:8080", "", "a b"):
        response = client.get("/files", headers={"Host": host})
        assert response.status_code in (400, 421), host
        assert response.json()["code"] in ("unknown_host", "bad_request")
        assert "secret" not in response.text
    for host in ("localhost:8080", "127.0.0.1:8080", "[::1]:8080", "LOCALHOST:8080"):
        assert client.get("/files", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_add_names(make_client):
    client = make_client(allowed_hosts=("files.example.org", "nas.lan:8443"))
    assert client.get("/files", headers={"Host": "files.example.org"}).status_code == 200
    assert client.get("/files", headers={"Host": "files.example.org:1234"}).status_code == 200
    assert client.get("/files", headers={"Host": "nas.lan:8443"}).status_code == 200
    assert client.get("/files", headers={"Host": "nas.lan:8080"}).status_code == 421
    with pytest.raises(InvalidArgumentError, match="is not HOST or HOST:PORT"):
        ServerSettings(allowed_hosts=("http://files.example.org",))


def test_tokens_are_still_required(make_client, tmp_path):
    from .test_auth import make_token

    token, line = make_token("alice")
    client = make_client(tokens=TokenSet.parse(line, "test"))
    assert client.post("/files", params={"name": "x"}, content=b"x").status_code == 401
    assert (
        client.post(
            "/files",
            params={"name": "x"},
            content=b"x",
            headers={"Authorization": f"Bearer {token}", "Origin": "https://evil.example"},
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/files", params={"name": "x"}, content=b"x", headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 200
    )


def test_a_real_server_refuses_rebound_names_and_cross_site_posts(server):
    address = urlsplit(server.base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    connection.request("GET", "/files", headers={"Host": f"rebound.example:{address.port}"})
    rebound = connection.getresponse()
    assert rebound.status == 421 and b"unknown_host" in rebound.read()
    connection.request(
        "POST",
        "/files?name=planted",
        body=b"x",
        headers={
            "Host": address.netloc,
            "Origin": "https://evil.example",
            "Content-Type": "multipart/form-data; boundary=b",
        },
    )
    cross_site = connection.getresponse()
    assert cross_site.status == 403 and b"cross_origin" in cross_site.read()
    connection.close()
    with server.client() as client:
        assert client.get("/files").json()["files"] == []
        assert client.get("/files", headers={"Host": f"localhost:{address.port}"}).status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "files.example.org"])
def test_listening_beyond_loopback_needs_tokens_or_the_override(host):
    with pytest.raises(InvalidArgumentError, match=f"refusing to listen on {host} without tokens.*--allow-no-token"):
        check_listen_address(host, ServerSettings())
    check_listen_address(host, ServerSettings(allow_no_token=True))
    for loopback in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_listen_address(loopback, ServerSettings())
