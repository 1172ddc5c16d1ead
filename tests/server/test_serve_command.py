"""`chunkstore serve` and `serve-token`: refusing unsafe binds, bad configuration, TLS."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import ssl
from urllib.parse import urlsplit

import httpx
import pytest

from chunkstore.apps.server.auth import TokenSet

from .serverprocess import init_store, run_chunkstore


def test_refuses_a_public_address_without_tokens(tmp_path):
    store = init_store(tmp_path / "store")
    for host in ("0.0.0.0", "::", "192.0.2.10"):
        result = run_chunkstore("--store", store, "serve", "--host", host, "--port", "0")
        assert result.returncode == 2, (host, result.stderr)
        assert result.stderr.startswith(f"chunkstore: refusing to listen on {host} without tokens")
        assert "--allow-no-token" in result.stderr and len(result.stderr.splitlines()) == 1


def test_allow_no_token_forces_a_start_beyond_loopback(start_server):
    server = start_server("--host", "0.0.0.0", "--allow-no-token")
    assert "(no tokens: full access for anyone who can reach it)" in server.log
    port = urlsplit(server.base_url).port
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        assert client.post("/files", params={"name": "a.txt"}, content=b"open").json()["outcome"] == "stored"
        assert client.get("/files/a.txt").content == b"open"


def _status_for_host(base_url: str, host_header: str) -> int:
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.request("GET", "/files", headers={"Host": host_header})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_allowed_hosts_are_answered_and_other_names_refused(start_server):
    server = start_server("--allowed-host", "files.example.org", "--allowed-host", "nas.lan:8443")
    port = urlsplit(server.base_url).port
    assert _status_for_host(server.base_url, f"files.example.org:{port}") == 200
    assert _status_for_host(server.base_url, "files.example.org") == 200  # any port, the default one too
    assert _status_for_host(server.base_url, "nas.lan:8443") == 200
    assert _status_for_host(server.base_url, f"nas.lan:{port}") == 421  # allowed on 8443 only
    assert _status_for_host(server.base_url, f"rebound.example:{port}") == 421
    assert _status_for_host(server.base_url, f"127.0.0.1:{port}") == 200


def test_without_allowed_hosts_only_local_names_are_answered(server):
    port = urlsplit(server.base_url).port
    assert _status_for_host(server.base_url, f"localhost:{port}") == 200
    assert _status_for_host(server.base_url, f"files.example.org:{port}") == 421


@pytest.mark.parametrize("value", ["http://files.example.org", "files.example.org:99999", "a b", ""])
def test_a_malformed_allowed_host_is_a_usage_error(tmp_path, value):
    store = init_store(tmp_path / "store")
    result = run_chunkstore("--store", store, "serve", "--port", "0", "--allowed-host", value)
    assert result.returncode == 2, result.stderr
    assert "is not HOST or HOST:PORT" in result.stderr and len(result.stderr.splitlines()) == 1


def test_help_explains_allowed_host_and_allow_no_token():
    result = run_chunkstore("serve", "--help")
    assert result.returncode == 0
    help_text = " ".join(result.stdout.split())
    assert "--allowed-host HOST[:PORT]" in help_text and "421" in help_text
    assert "--allow-no-token" in help_text and "full access" in help_text


def test_serve_token_prints_a_token_and_its_hashed_line():
    result = run_chunkstore("serve-token", "backup-host", "--read-only")
    assert result.returncode == 0, result.stderr
    token, line = result.stdout.splitlines()
    assert token not in line and line.startswith("sha256:") and line.endswith(" ro backup-host")
    principal = TokenSet.parse(line, "test").lookup(token)
    assert principal is not None and principal.name == "backup-host" and not principal.can_write
    assert TokenSet.parse(line, "test").lookup(token + "x") is None


@pytest.mark.parametrize(
    "content", ["plain-token rw someone", "sha256:abcd rw short-hash", "sha256:" + "0" * 64 + " admin x"]
)
def test_malformed_tokens_file_is_a_usage_error(tmp_path, content):
    store = init_store(tmp_path / "store")
    tokens = tmp_path / "tokens"
    tokens.write_text(content + "\n")
    result = run_chunkstore("--store", store, "serve", "--port", "0", "--tokens-file", str(tokens))
    assert result.returncode == 2
    assert "is not 'sha256:<64 hex digits> rw|ro NAME'" in result.stderr


def test_certfile_needs_keyfile(tmp_path):
    store = init_store(tmp_path / "store")
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    result = run_chunkstore("--store", store, "serve", "--port", "0", "--certfile", str(cert))
    assert result.returncode == 2 and "--certfile and --keyfile go together" in result.stderr


def test_missing_store_exits_3(tmp_path):
    result = run_chunkstore("--store", str(tmp_path / "nothing"), "serve", "--port", "0")
    assert result.returncode == 3 and "no store at" in result.stderr


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_tls_with_certfile_and_keyfile(start_server, tmp_path):
    cert, key = _self_signed(tmp_path)
    server = start_server("--certfile", str(cert), "--keyfile", str(key))
    assert server.base_url.startswith("https://127.0.0.1:")
    trusting = ssl.create_default_context(cafile=str(cert))
    with server.client(verify=trusting) as client:
        uploaded = client.post("/files", params={"name": "secret.txt"}, content=b"over TLS").json()
        downloaded = client.get("/files/secret.txt").content
    assert uploaded["outcome"] == "stored" and downloaded == b"over TLS"
    # A client that does not trust the certificate is refused.
    with pytest.raises(httpx.ConnectError), server.client() as untrusting:
        untrusting.get("/healthz")
    plain = server.base_url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(plain + "/healthz", timeout=10)
