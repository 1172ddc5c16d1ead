"""Bearer tokens: every API endpoint refuses missing and wrong tokens; read-only tokens cannot write."""

from __future__ import annotations

import httpx
import pytest

from .serverprocess import run_chunkstore


def make_token(name: str, read_only: bool = False) -> tuple[str, str]:
    """A token and its tokens-file line, made by `chunkstore serve-token`."""
    result = run_chunkstore("serve-token", name, *(["--read-only"] if read_only else []))
    assert result.returncode == 0, result.stderr
    token, line = result.stdout.splitlines()
    return token, line


# Every operation of the API, with a request that succeeds for an allowed caller.
# test_every_api_operation_is_covered keeps this table complete.
READS = [("GET", "/files", {}), ("GET", "/files/{name}", {}), ("GET", "/stats", {}), ("GET", "/activity", {})]
WRITES = [("POST", "/files", {"params": {"name": "new.txt"}, "content": b"new"}), ("DELETE", "/files/{name}", {})]
OPEN = [("GET", "/healthz", {})]


@pytest.fixture
def secured(start_server, tmp_path):
    writer_token, writer_line = make_token("alice")
    reader_token, reader_line = make_token("bob", read_only=True)
    env_token, env_line = make_token("ci")
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"# tokens for the test server\n{writer_line}\n{reader_line}\n")
    server = start_server("--tokens-file", str(tokens_file), env={"CHUNKSTORE_TOKENS": env_line})
    with server.client(writer_token) as client:
        assert client.post("/files", params={"name": "seed.txt"}, content=b"seed").status_code == 200
    return server, {"writer": writer_token, "reader": reader_token, "env": env_token}


def call(client: httpx.Client, method: str, path: str, options: dict) -> httpx.Response:
    return client.request(method, path.replace("{name}", "seed.txt"), **options)


def test_every_api_operation_is_covered(secured):
    server, _ = secured
    with server.client() as client:
        schema = client.get("/openapi.json").json()
    operations = {(method.upper(), path) for path, item in schema["paths"].items() for method in item}
    assert operations == {(method, path) for method, path, _ in READS + WRITES + OPEN}


@pytest.mark.parametrize("method, path, options", READS + WRITES)
def test_missing_and_wrong_tokens_are_refused(secured, method, path, options):
    server, _ = secured
    with server.client() as anonymous, server.client("cs_not-a-real-token") as wrong, server.client() as malformed:
        missing = call(anonymous, method, path, options)
        invalid = call(wrong, method, path, options)
        not_bearer = malformed.request(
            method, path.replace("{name}", "seed.txt"), headers={"Authorization": "Basic dXNlcjpwYXNz"}, **options
        )
    assert missing.status_code == 401 and missing.json()["code"] == "unauthorized"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert invalid.status_code == 401 and invalid.json()["code"] == "invalid_token"
    assert not_bearer.status_code == 401
    with server.client(secured[1]["writer"]) as client:
        assert client.get("/files/seed.txt").content == b"seed"  # nothing was changed by refused requests


@pytest.mark.parametrize("method, path, options", WRITES)
def test_read_only_tokens_cannot_write(secured, method, path, options):
    server, tokens = secured
    with server.client(tokens["reader"]) as client:
        response = call(client, method, path, options)
        assert response.status_code == 403 and response.json()["code"] == "forbidden"
        assert [entry["name"] for entry in client.get("/files").json()["files"]] == ["seed.txt"]


@pytest.mark.parametrize("method, path, options", READS)
def test_read_only_tokens_can_read(secured, method, path, options):
    server, tokens = secured
    with server.client(tokens["reader"]) as client:
        assert call(client, method, path, options).status_code == 200


@pytest.mark.parametrize("who", ["writer", "env"])
def test_read_write_tokens_from_file_and_environment_can_write(secured, who):
    server, tokens = secured
    with server.client(tokens[who]) as client:
        uploaded = client.post("/files", params={"name": f"by-{who}"}, content=b"x").json()
        activity = client.get("/activity").json()["entries"]
        removed = client.delete("/files/seed.txt")
    assert uploaded["outcome"] == "stored"
    assert activity[0]["user"] == {"writer": "alice", "env": "ci"}[who]
    assert removed.status_code == 200


def test_healthz_page_and_schema_are_open(secured):
    server, _ = secured
    with server.client() as client:
        health = client.get("/healthz")
        page = client.get("/")
        schema = client.get("/openapi.json")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert page.status_code == 200 and "chunkstore" in page.text
    assert schema.status_code == 200
    # The page and schema carry no store data: no file name appears in them.
    assert "seed.txt" not in page.text + schema.text


def test_no_cookies_and_no_cors_by_default(secured):
    server, tokens = secured
    with server.client(tokens["writer"]) as client:
        responses = [
            client.get("/files"),
            client.get("/"),
            client.options(
                "/files", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
            ),
            client.get("/files", headers={"Origin": "https://evil.example"}),
        ]
    for response in responses:
        assert "set-cookie" not in response.headers
        assert "access-control-allow-origin" not in response.headers


def test_cors_origin_can_be_allowed(start_server):
    server = start_server("--cors-origin", "https://app.example")
    with server.client() as client:
        allowed = client.get("/files", headers={"Origin": "https://app.example"})
        other = client.get("/files", headers={"Origin": "https://evil.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers
