"""The HTTP API and the web page, as an ASGI application built around one open Store."""

import asyncio
import functools
import logging
import time
import urllib.parse
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import ClientDisconnect

from chunkstore import __version__
from chunkstore.apps.server.auth import LOCAL_USER, Principal, TokenSet
from chunkstore.apps.server.errors import ApiError, error_responses, install_error_handlers
from chunkstore.apps.server.guard import HostRule, RequestGuard, parse_allowed_host
from chunkstore.apps.server.transfer import (
    ByteRange,
    PieceFeed,
    RangeNotSatisfiable,
    RequestBody,
    UploadStalled,
    UploadTooLarge,
    parse_ascii_int,
    parse_range,
    verified_pieces,
)
from chunkstore.apps.uploads import UPLOAD_MESSAGES
from chunkstore.backends.catalog import VersionRecord
from chunkstore.core.names import normalize_name, normalize_prefix
from chunkstore.store import Store

DEFAULT_MAX_UPLOAD_BYTES = 64 * 1024**3
# Each upload runs a put (a thread pool and up to ~40 MiB of buffers): this many at once.
DEFAULT_MAX_CONCURRENT_UPLOADS = 4
ACTIVITY_ENTRIES = 200
# What the snapshot of each upload says ran it.
UPLOAD_PROGRAM = "web upload"
# Threads reading chunks for all downloads together (each download reads a few ahead).
DOWNLOAD_THREADS = 8
# The rules of normalize_name and normalize_prefix, as far as a regular expression can say
# them, for the schema only: clients learn from it which names are valid, while the server
# checks names with normalize_name alone (tests/server/test_names.py holds the two in step).
# Segments are split by '/', none of them is '..', there is no NUL, and at least one segment
# is not empty or '.'; a prefix may also have no other segments (everything). The limit of
# MAX_NAME_BYTES is in bytes of UTF-8, which a pattern cannot count.
_SEGMENT = r"(?:[^/\x00.][^/\x00]*|\.[^/\x00.][^/\x00]*|\.\.[^/\x00]+)"
_NAME = rf"(?:(?:\.|{_SEGMENT})?/)*{_SEGMENT}(?:/(?:\.|{_SEGMENT})?)*"
NAME_PATTERN = rf"^{_NAME}$"
PREFIX_PATTERN = rf"^(?:(?:\.?/)*\.?|{_NAME})$"
MAX_VERSION = 2**63 - 1
STATIC = resources.files("chunkstore.apps.server") / "static"
log = logging.getLogger("chunkstore.apps.server")


# Timeouts and limits against slow or idle clients; the measurements behind them are in
# docs/http-api.md ("Timeouts and limits").
# A request head (request line and headers) must be complete this long after the connection
# opens or the previous response ends: a whole request to /healthz over loopback took 25 ms
# here, and a 32 KiB head (the largest allowed) takes 4 s at 64 kbit/s.
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0
# An upload whose body brings no byte for this long is abandoned (408). Linux retransmits a
# lost segment after 0.2, 0.6, 1.4, ... 25.4 s, so 60 s outlasts 7 lost retransmissions.
DEFAULT_BODY_TIMEOUT_SECONDS = 60.0
# An idle connection between requests is closed after this (uvicorn's default).
DEFAULT_KEEP_ALIVE_SECONDS = 5
# Open connections at most: 500 held connections, each with 8 KB of an unfinished head, grew
# the server's RSS by 11 KiB each (5.5 MB in all); each also holds a file descriptor, and 512
# leave room under the 1,024 descriptors systemd gives a service by default.
DEFAULT_MAX_CONNECTIONS = 512
# The largest request head: a 4,096-byte name percent-encoded is 12,288 bytes, and a browser
# adds 1-2 KiB of headers plus whatever cookies other local sites set on `localhost`.
DEFAULT_MAX_HEAD_BYTES = 32 * 1024


@dataclass
class ServerSettings:
    """What the server allows, and how long and how many clients it holds.

    allowed_hosts: extra `HOST` (any port) or `HOST:PORT` values accepted in the Host header,
    besides localhost, 127.0.0.1 and [::1] on the port a request arrived on and the address it
    arrived on (for a name the server is reached by, or behind a reverse proxy).
    allow_no_token: listen beyond loopback without tokens (check_listen_address refuses otherwise).
    The timeouts and limits are enforced by chunkstore.apps.server.serving.uvicorn_config, except
    body_timeout_seconds, which the upload route enforces."""

    tokens: TokenSet = field(default_factory=TokenSet)
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_concurrent_uploads: int = DEFAULT_MAX_CONCURRENT_UPLOADS
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    allow_no_token: bool = False
    header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT_SECONDS
    body_timeout_seconds: float = DEFAULT_BODY_TIMEOUT_SECONDS
    keep_alive_seconds: int = DEFAULT_KEEP_ALIVE_SECONDS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES
    host_rules: tuple[HostRule, ...] = field(init=False, repr=False)

    def __post_init__(self):
        self.host_rules = tuple(map(parse_allowed_host, self.allowed_hosts))


class _NameConvertor(Convertor[str]):
    """The rest of the path, newlines included (Starlette's `path` stops at one): a name
    holding a newline can be stored, so it must be reachable. The name is checked later."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("stored_name", _NameConvertor())


# ---- response shapes (they make the OpenAPI schema) ------------------------------------


class UploadResult(BaseModel):
    name: str
    version: int | None
    outcome: str
    message: str
    duplicate_of: str | None
    size: int
    new_bytes: int


class FileEntry(BaseModel):
    name: str
    version: int
    size: int
    digest: str
    stored_at: str
    modified_at: str


class FileList(BaseModel):
    files: list[FileEntry]


class Removed(BaseModel):
    removed: list[FileEntry]


class ActivityEntry(BaseModel):
    time: str
    action: str
    name: str
    outcome: str
    message: str
    size: int
    new_bytes: int
    duplicate_of: str | None
    user: str


class Activity(BaseModel):
    entries: list[ActivityEntry]


class Health(BaseModel):
    status: str
    version: str


# Refusals any route may answer: no or a wrong token, a read-only token or another site's page,
# an unknown Host.
ACCESS_ERRORS = (401, 403, 421)


# ---- the application ------------------------------------------------------------------


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="seconds")


def _entry(record: VersionRecord) -> FileEntry:
    return FileEntry(
        name=record.name,
        version=record.version,
        size=record.size,
        digest=record.digest.hex(),
        stored_at=_iso(record.stored_at_ns),
        modified_at=_iso(record.stat.mtime_ns),
    )


def _content_disposition(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in base)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{urllib.parse.quote(base, safe='')}"


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}


def create_app(store: Store, settings: ServerSettings | None = None) -> FastAPI:
    """The API and web page over an open store. The caller keeps ownership of the store."""
    settings = settings or ServerSettings()
    activity: deque[ActivityEntry] = deque(maxlen=ACTIVITY_ENTRIES)
    pool = ThreadPoolExecutor(DOWNLOAD_THREADS, thread_name_prefix="chunkstore-serve")
    upload_slots = asyncio.Semaphore(settings.max_concurrent_uploads)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="chunkstore",
        version=__version__,
        description="Upload, list, download and delete files in a deduplicating chunkstore. "
        "Authenticate with `Authorization: Bearer TOKEN` when the server has tokens configured.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # Innermost of the middleware, so its refusals get the CORS and security headers too.
    app.add_middleware(RequestGuard, allowed_hosts=settings.host_rules, trusted_origins=settings.cors_origins)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Range"],
            expose_headers=["Content-Range", "Content-Length"],
            allow_credentials=False,
        )

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for header, value in SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        return response

    bearer = HTTPBearer(auto_error=False, description="A read-only (ro) or read-write (rw) token.")

    def authenticate(credentials: HTTPAuthorizationCredentials | None) -> Principal:
        if not settings.tokens:
            return LOCAL_USER
        if credentials is None:
            raise ApiError(
                401,
                "unauthorized",
                "this server needs a bearer token (Authorization: Bearer TOKEN)",
                {"WWW-Authenticate": "Bearer"},
            )
        principal = settings.tokens.lookup(credentials.credentials)
        if principal is None:
            raise ApiError(
                401,
                "invalid_token",
                "the bearer token is not valid",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return principal

    def reader(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        return authenticate(credentials)

    def writer(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        principal = authenticate(credentials)
        if not principal.can_write:
            raise ApiError(403, "forbidden", f"token {principal.name!r} is read-only")
        return principal

    Reader = Annotated[Principal, Depends(reader)]
    Writer = Annotated[Principal, Depends(writer)]

    # Every name and prefix is checked by normalize_name (normalize_prefix), in these
    # dependencies; what it refuses is a 400 invalid_argument. The patterns only describe it.
    # OpenAPI path parameters cannot describe '/', so the schema shows the pattern of one
    # segment; the route takes the whole rest of the path.
    def path_name(
        name: Annotated[
            str,
            Path(
                description="The stored name; its '/' are sent as they are (a/b.txt)",
                json_schema_extra={"pattern": f"^{_SEGMENT}$"},
            ),
        ],
    ) -> str:
        return normalize_name(name)

    def query_name(
        name: Annotated[
            str,
            Query(
                description="The name to store the file under, as in `put --as`",
                json_schema_extra={"pattern": NAME_PATTERN},
            ),
        ],
    ) -> str:
        return normalize_name(name)

    def query_prefix(
        prefix: Annotated[
            str,
            Query(
                description="Only names equal to or below this folder", json_schema_extra={"pattern": PREFIX_PATTERN}
            ),
        ] = "",
    ) -> str:
        return normalize_prefix(prefix)

    PathName = Annotated[str, Depends(path_name)]

    def record_activity(
        principal: Principal,
        action: str,
        name: str,
        outcome: str,
        message: str,
        size: int = 0,
        new_bytes: int = 0,
        duplicate_of: str | None = None,
    ) -> None:
        activity.appendleft(
            ActivityEntry(
                time=_iso(time.time_ns()),
                action=action,
                name=name,
                outcome=outcome,
                message=message,
                size=size,
                new_bytes=new_bytes,
                duplicate_of=duplicate_of,
                user=principal.name,
            )
        )

    # ---- API ------------------------------------------------------------------------

    @app.get(
        "/healthz",
        response_model=Health,
        tags=["server"],
        summary="Liveness check (open without a token; reveals nothing about the store)",
    )
    def healthz() -> Health:
        return Health(status="ok", version=__version__)

    @app.post(
        "/files",
        response_model=UploadResult,
        tags=["files"],
        summary="Upload a file (the raw request body)",
        responses=error_responses(400, *ACCESS_ERRORS, 408, 409, 413, 500),
        openapi_extra={
            "requestBody": {
                "required": False,
                "description": "The file's bytes (none: an empty file)",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def upload(
        request: Request, principal: Writer, stored_name: Annotated[str, Depends(query_name)]
    ) -> UploadResult:
        declared = parse_ascii_int(request.headers.get("content-length", ""))
        if declared is not None and declared > settings.max_upload_bytes:
            raise ApiError(413, "too_large", f"upload is larger than the limit of {settings.max_upload_bytes} bytes")
        body = RequestBody(request.stream(), settings.max_upload_bytes, settings.body_timeout_seconds)
        async with upload_slots:
            try:
                summary = await anyio.to_thread.run_sync(
                    functools.partial(store.put_stream, body, stored_name, program=UPLOAD_PROGRAM)
                )
            except UploadTooLarge as error:
                raise ApiError(413, "too_large", str(error)) from None
            except UploadStalled as error:
                # The rest of the body is never read, so the connection cannot carry another request.
                log.warning("upload of %s abandoned: %s after %d bytes", stored_name, error, body.received)
                raise ApiError(408, "body_timeout", str(error), {"Connection": "close"}) from None
            except ClientDisconnect:
                # Nothing was committed; the chunks already written are garbage for the next gc.
                log.warning(
                    "upload of %s abandoned: the client disconnected after %d bytes", stored_name, body.received
                )
                raise ApiError(400, "client_disconnected", "the upload was interrupted") from None
        result = summary.results[0]
        outcome, duplicate_of = result.upload_outcome
        message = UPLOAD_MESSAGES[outcome]
        record_activity(principal, "upload", result.name, outcome, message, result.size, result.new_bytes, duplicate_of)
        return UploadResult(
            name=result.name,
            version=result.version,
            outcome=outcome,
            message=message,
            duplicate_of=duplicate_of,
            size=result.size,
            new_bytes=result.new_bytes,
        )

    @app.get(
        "/files",
        response_model=FileList,
        tags=["files"],
        summary="List files (latest versions, or all)",
        responses=error_responses(400, *ACCESS_ERRORS),
    )
    def list_files(
        _principal: Reader,
        prefix: Annotated[str, Depends(query_prefix)],
        versions: Annotated[bool, Query(description="Every version, not only the latest")] = False,
    ) -> FileList:
        return FileList(files=[_entry(record) for record in store.list(prefix, all_versions=versions)])

    @app.get(
        "/files/{name:stored_name}",
        tags=["files"],
        summary="Download a file (streamed, verified; supports Range)",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                "description": "The file",
            },
            206: {
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                "description": "The requested byte range",
            },
            **error_responses(400, *ACCESS_ERRORS, 404, 416, 500),
        },
    )
    async def download(
        request: Request,
        _principal: Reader,
        name: PathName,
        version: Annotated[int | None, Query(ge=1, le=MAX_VERSION, description="Default: the latest")] = None,
    ):
        record = await anyio.to_thread.run_sync(store.catalog.get_version, name, version)
        try:
            wanted = parse_range(request.headers.get("range"), record.size)
        except RangeNotSatisfiable:
            raise ApiError(
                416,
                "range_not_satisfiable",
                f"the file is {record.size} bytes",
                {"Content-Range": f"bytes */{record.size}"},
            ) from None
        status = 200 if wanted is None else 206
        wanted = wanted or ByteRange(0, record.size)
        headers = {
            "Accept-Ranges": "bytes",
            "ETag": f'"{record.digest.hex()}"',
            "Content-Length": str(wanted.length),
            "Content-Disposition": _content_disposition(record.name),
        }
        if status == 206:
            headers["Content-Range"] = f"bytes {wanted.start}-{wanted.end - 1}/{record.size}"
        feed = PieceFeed(verified_pieces(store, record, wanted, pool), asyncio.get_running_loop())
        try:
            # The first piece is read before answering, so a damaged start of file is a clean JSON error.
            first = await feed.next()
        except BaseException:
            feed.close()
            raise

        async def body():
            try:
                piece = first
                while piece is not None:
                    yield piece
                    piece = await feed.next()
            finally:
                feed.close()

        return StreamingResponse(body(), status_code=status, headers=headers, media_type="application/octet-stream")

    @app.delete(
        "/files/{name:stored_name}",
        response_model=Removed,
        tags=["files"],
        summary="Delete a file (every version, or one); its space is freed by the next gc",
        responses=error_responses(400, *ACCESS_ERRORS, 404),
    )
    def delete(
        principal: Writer,
        name: PathName,
        version: Annotated[int | None, Query(ge=1, le=MAX_VERSION, description="Default: every version")] = None,
    ) -> Removed:
        removed = store.remove([name], version=version)
        for record in removed:
            record_activity(
                principal, "delete", record.name, "deleted", f"version {record.version} deleted", record.size
            )
        return Removed(removed=[_entry(record) for record in removed])

    @app.get(
        "/stats",
        tags=["store"],
        summary="Store totals: logical, unique and stored bytes, ratios",
        responses=error_responses(*ACCESS_ERRORS),
    )
    def stats(_principal: Reader) -> dict:
        return store.stats()

    @app.get(
        "/activity",
        response_model=Activity,
        tags=["store"],
        summary="Recent uploads and deletions through this server (newest first; kept in memory)",
        responses=error_responses(*ACCESS_ERRORS),
    )
    def recent_activity(_principal: Reader) -> Activity:
        return Activity(entries=list(activity))

    # ---- the page and the API documentation (no data in them: open like /healthz) -------

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(str(STATIC / "index.html"))

    @app.get("/docs", include_in_schema=False)
    def docs():
        return FileResponse(str(STATIC / "docs.html"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app


def create_app_for_url(
    url: str, settings: ServerSettings | None = None, *, passphrase: bytes | None = None
) -> tuple[FastAPI, Store]:
    """Open the store at url and build the app over it; the caller closes the store."""
    store = Store.open(url, passphrase=passphrase)
    return create_app(store, settings), store
