"""Fixtures: a store in a temporary folder and a `chunkstore serve` process over it."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the server needs the serve extra (pip install '.[serve]')")
pytest.importorskip("uvicorn", reason="the server needs the serve extra (pip install '.[serve]')")
pytest.importorskip("httpx", reason="the server tests need httpx (in the test extra)")

from .serverprocess import ServerProcess, init_store  # noqa: E402


@pytest.fixture
def start_server(tmp_path):
    """Start servers (each over its own new store unless one is given); stop them all afterwards."""
    started: list[ServerProcess] = []

    def start(
        *args: str,
        store_url: str | None = None,
        env: dict | None = None,
        avg_size: str = "64K",
        library_settings: dict | None = None,
    ) -> ServerProcess:
        url = store_url or init_store(tmp_path / f"store{len(started)}", avg_size)
        server = ServerProcess(url, args, env or {}, library_settings=library_settings)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(start_server) -> ServerProcess:
    """A server without tokens on loopback (full access), over a store with 4 KiB chunks."""
    return start_server(avg_size="4K")
