"""The OpenAPI schema: served at /openapi.json, documented at /docs, and checked by schemathesis."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .serverprocess import run_chunkstore


def test_docs_page_renders_the_schema_without_external_assets(server):
    with server.client() as client:
        page = client.get("/docs")
        schema = client.get("/openapi.json").json()
    assert page.status_code == 200
    assert "/static/docs.js" in page.text and "http" not in page.text.replace('href="/openapi.json"', "")
    assert schema["openapi"].startswith("3.")
    assert {"/files", "/files/{name}", "/stats", "/healthz", "/activity"} <= set(schema["paths"])


def test_schemathesis_finds_no_problem(start_server, tmp_path):
    pytest.importorskip("schemathesis", reason="schemathesis is not installed (it is in the test extra)")
    token, line = run_chunkstore("serve-token", "fuzzer").stdout.splitlines()
    server = start_server(env={"CHUNKSTORE_TOKENS": line}, avg_size="4K")
    # Every check, on every operation: positive and negative inputs, and stateful sequences
    # (upload, then download or delete what was uploaded). A fixed seed keeps runs repeatable.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{server.base_url}/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "all",
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )  # its cache folder goes to the temporary folder
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Traceback" not in server.log
