"""Running the app under uvicorn: where it may listen, and how long and how many clients it holds.

uvicorn has no limit on the time a client takes to send a request head: a connection that
sends half a head, or nothing, is held until the client goes. GuardedH11Protocol adds that
limit and a cap on open connections; uvicorn_config puts them together with uvicorn's own
limits. The command line calls check_listen_address, then runs uvicorn with uvicorn_config.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
from typing import cast

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from chunkstore.apps.server.app import ServerSettings
from chunkstore.errors import InvalidArgumentError

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen_address(host: str, settings: ServerSettings) -> None:
    """Refuse to listen beyond loopback without tokens, unless settings.allow_no_token.

    Without tokens every caller may read and delete every file, so only callers already on
    the machine may be let in."""
    if not settings.tokens and not settings.allow_no_token and not is_loopback(host):
        raise InvalidArgumentError(
            f"refusing to listen on {host} without tokens: anyone who can reach it could read and delete "
            "every file. Configure tokens (--tokens-file or $CHUNKSTORE_TOKENS), listen on 127.0.0.1, "
            "or pass --allow-no-token if something in front of the server (a firewall, a proxy that "
            "authenticates) already keeps others out."
        )


def _over_capacity_response() -> bytes:
    body = json.dumps(
        {"code": "too_many_connections", "message": "the server holds as many connections as it may; try again later"}
    ).encode()
    return (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"retry-after: 1\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


OVER_CAPACITY = _over_capacity_response()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a request-head timeout and a cap on connections.

    The head timer runs whenever the application is not handling a request on the
    connection: from the connection's start, and from the end of each response, until the
    next request's head is complete. Receiving bytes does not restart it, so trickling a
    head byte by byte gains nothing. Once the head is in, the body's own timeout applies
    (ServerSettings.body_timeout_seconds, in RequestBody)."""

    def __init__(self, *args, header_timeout: float, max_connections: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._max_connections = max_connections
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            # Closed at once so the file descriptor is freed: a flood of idle connections
            # cannot exhaust the process's descriptors (1,024 by default under systemd). It
            # leaves the count now, not when its close completes: until then uvicorn would count
            # it against limit_concurrency and answer a held connection's next request 503.
            self.connections.discard(self)
            transport.write(OVER_CAPACITY)
            transport.close()
            return
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        awaiting_head = (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing()
        if not awaiting_head:
            self._stop_head_timer()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(self._header_timeout, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def uvicorn_config(
    app: FastAPI, settings: ServerSettings, *, ssl_certfile: str | None = None, ssl_keyfile: str | None = None
) -> uvicorn.Config:
    """The uvicorn configuration that enforces the settings' timeouts and limits."""
    protocol = functools.partial(
        GuardedH11Protocol, header_timeout=settings.header_timeout_seconds, max_connections=settings.max_connections
    )
    return uvicorn.Config(
        app,
        # uvicorn makes each connection's protocol by calling this with its config and state:
        # a partial of the class does that as the class itself would.
        http=cast("type[asyncio.Protocol]", protocol),
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_keep_alive=settings.keep_alive_seconds,
        h11_max_incomplete_event_size=settings.max_head_bytes,
        # uvicorn counts requests in progress as well as connections (a response can outlive
        # its connection for a moment). Connections are capped when they are made, so one
        # more than that lets its limit bound only the requests, never refuse a held connection.
        limit_concurrency=settings.max_connections + 1,
    )
