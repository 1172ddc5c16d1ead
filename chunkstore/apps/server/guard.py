"""Refusing requests that a browser was tricked into sending: other sites and DNS rebinding.

Without tokens, loopback is the only barrier, and a browser on the same machine crosses it
for any page it shows. Two checks close the ways in:

- **Host** (every request): DNS rebinding points an attacker's name at 127.0.0.1, so the
  browser treats the server as the attacker's own origin and lets the page read and delete.
  The request still carries the attacker's name in Host, so only names the server was
  started for are answered: `localhost`, `127.0.0.1` and `[::1]` on the port the request
  arrived on, the address it arrived on, and the configured allowed hosts. Others get 421
  Misdirected Request (RFC 9110 15.5.20: the server is not authoritative for that name).
- **Origin / Sec-Fetch-Site** (POST, PUT, PATCH, DELETE): a page of another site can send
  a simple form POST without asking anyone. Browsers name the page's origin in Origin and
  say in Sec-Fetch-Site whether it is the server's own; a request from another origin is
  refused with 403 unless that origin was allowed with cors_origins. Clients that are not
  browsers send neither header and are not affected.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from chunkstore.apps.server.errors import error_response
from chunkstore.errors import InvalidArgumentError

LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")
STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# A host name or IPv4 address, or an IPv6 address in brackets; then an optional port.
_HOST = re.compile(r"(?P<name>\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(?::(?P<port>[0-9]{1,5}))?", re.ASCII)


@dataclass(frozen=True)
class HostRule:
    """A host name (IPv6 in brackets) and a port; None matches any port."""

    name: str
    port: int | None

    def matches(self, name: str, port: int) -> bool:
        return self.name == name and self.port in (None, port)


def split_host(value: str) -> tuple[str, int | None] | None:
    """(name, port) of a `HOST[:PORT]` value, lower-cased; None when it is not one."""
    match = _HOST.fullmatch(value.strip().lower())
    if match is None:
        return None
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        return None
    return match["name"], port


def parse_allowed_host(value: str) -> HostRule:
    """`HOST` (any port) or `HOST:PORT`, as given to --allowed-host; IPv6 in brackets."""
    parsed = split_host(value)
    if parsed is None:
        raise InvalidArgumentError(f"allowed host {value!r} is not HOST or HOST:PORT (IPv6 in brackets: [::1]:8080)")
    return HostRule(*parsed)


def _origin(value: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an Origin or of a cors_origins entry; None for `null` and junk."""
    try:
        parts = urllib.parse.urlsplit(value.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def _bracketed(address: str) -> str:
    return f"[{address.lower()}]" if ":" in address else address.lower()


class RequestGuard:
    """ASGI middleware: refuses unknown Host names and state-changing requests from other origins."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[HostRule, ...], trusted_origins: tuple[str, ...]):
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.trusted_origins = frozenset(filter(None, map(_origin, trusted_origins)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope, Headers(scope=scope))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope, headers: Headers):
        """The error response for a request that must not be answered, else None."""
        host = split_host(headers.get("host", ""))
        if host is None:
            return error_response(400, "bad_request", "the request has no valid Host header")
        scheme = scope.get("scheme", "http")
        name, port = host[0], host[1] or DEFAULT_PORTS.get(scheme, 80)
        if not self._host_allowed(scope, name, port):
            return error_response(
                421,
                "unknown_host",
                f"this server does not answer for host {name!r}; start it with "
                f"--allowed-host {name}:{port} if clients should reach it by that name",
            )
        if scope["method"] not in STATE_CHANGING_METHODS:
            return None
        origin_header = headers.get("origin")
        origin = _origin(origin_header) if origin_header is not None else None
        trusted = origin in self.trusted_origins
        if origin_header is not None and origin != (scheme, name.strip("[]"), port) and not trusted:
            return error_response(
                403, "cross_origin", f"a page of another origin ({origin_header[:100]}) may not change files here"
            )
        if headers.get("sec-fetch-site") in ("cross-site", "same-site") and not trusted:
            return error_response(403, "cross_origin", "a page of another site may not change files here")
        return None

    def _host_allowed(self, scope: Scope, name: str, port: int) -> bool:
        server = scope.get("server")
        if server is not None:
            address, bound_port = server
            # Host names the port the client connected to; another one means the request was
            # relayed by something listening there, which only an allowed host may do.
            if port == bound_port and name in (*LOCAL_NAMES, _bracketed(address)):
                return True
        return any(rule.matches(name, port) for rule in self.allowed_hosts)
