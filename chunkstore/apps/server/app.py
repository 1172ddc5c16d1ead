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
from datetime import datetime, timezone
from importlib import resources
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from chunkstore import __version__
from chunkstore.backends.catalog import VersionRecord
from chunkstore.errors import ChunkstoreError, IntegrityError, InvalidArgumentError, NotFoundError, WrongKeyError
from chunkstore.core.names import normalize_name
from chunkstore.store import Store
from chunkstore.apps.uploads import UPLOAD_MESSAGES
from chunkstore.apps.server.auth import LOCAL_USER, Principal, TokenSet
from chunkstore.apps.server.transfer import ByteRange, PieceFeed, RangeNotSatisfiable, RequestBody, UploadTooLarge, parse_range, verified_pieces

DEFAULT_MAX_UPLOAD_BYTES = 64 * 1024**3
# Each upload runs a put (a thread pool and up to ~40 MiB of buffers): this many at once.
DEFAULT_MAX_CONCURRENT_UPLOADS = 4
ACTIVITY_ENTRIES = 200
# What the snapshot of each upload says ran it.
UPLOAD_PROGRAM = "web upload"
# Threads reading chunks for all downloads together (each download reads a few ahead).
DOWNLOAD_THREADS = 8
# The name rules of chunkstore.core.names, as far as a regular expression can say them, so the
# schema tells clients which names are valid: segments split by '/', none of them '..',
# no NUL, and at least one segment that is not empty or '.'.
_SEGMENT = r"(?:[^/\x00.][^/\x00]*|\.[^/\x00.][^/\x00]*|\.\.[^/\x00]+)"
NAME_PATTERN = rf"^(?:(?:\.|{_SEGMENT})?/)*{_SEGMENT}(?:/(?:\.|{_SEGMENT})?)*$"
PREFIX_PATTERN = rf"^(?:\.|{_SEGMENT})?(?:/(?:\.|{_SEGMENT})?)*$"
MAX_VERSION = 2**63 - 1
STATIC = resources.files("chunkstore.apps.server") / "static"
log = logging.getLogger("chunkstore.apps.server")


@dataclass
class ServerSettings:
    tokens: TokenSet = field(default_factory=TokenSet)
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_concurrent_uploads: int = DEFAULT_MAX_CONCURRENT_UPLOADS
    cors_origins: tuple[str, ...] = ()


# ---- response shapes (they make the OpenAPI schema) ------------------------------------


class ErrorBody(BaseModel):
    code: str
    message: str


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


ERROR_MEANINGS = {
    400: "invalid_argument: a name or argument chunkstore refuses",
    401: "unauthorized / invalid_token: no bearer token, or an unknown one",
    403: "forbidden: a read-only token asked to change something",
    404: "not_found: no such name or version",
    413: "too_large: the upload passes the server's size limit",
    416: "range_not_satisfiable: the Range is outside the file",
    422: "invalid_request: a parameter of the wrong type or form",
    500: "integrity_error: damaged or missing stored data (or another store error)",
}


def _errors(*statuses: int) -> dict:
    return {status: {"model": ErrorBody, "description": ERROR_MEANINGS[status]} for status in statuses}


AUTH_ERRORS = (401, 403)


# ---- errors ----------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def _library_error(error: ChunkstoreError) -> ApiError:
    """The library's exit codes, as HTTP statuses with stable codes."""
    if isinstance(error, InvalidArgumentError):
        return ApiError(400, "invalid_argument", str(error))
    if isinstance(error, NotFoundError):
        return ApiError(404, "not_found", str(error))
    if isinstance(error, IntegrityError):
        return ApiError(500, "integrity_error", str(error))
    if isinstance(error, WrongKeyError):
        return ApiError(500, "store_key_error", str(error))
    return ApiError(500, "store_error", str(error))


_HTTP_ERROR_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request, error: ApiError):
        return _error_response(error.status, error.code, error.message, error.headers)

    @app.exception_handler(ChunkstoreError)
    async def library_error(_request, error: ChunkstoreError):
        mapped = _library_error(error)
        return _error_response(mapped.status, mapped.code, mapped.message)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception):
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return _error_response(500, "internal_error", f"the server failed: {type(error).__name__}")

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, error: RequestValidationError):
        details = "; ".join(f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors())
        return _error_response(422, "invalid_request", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        headers = dict(getattr(error, "headers", None) or {})
        if error.status_code == 405:
            # Starlette names only the first route matching the path; list every method of the path.
            headers["Allow"] = ", ".join(sorted({
                method for route in request.app.router.routes
                if isinstance(route, APIRoute) and route.path_regex.match(request.scope["path"])
                for method in route.methods}))
        return _error_response(error.status_code, _HTTP_ERROR_CODES.get(error.status_code, "http_error"),
                               str(error.detail), headers)


# ---- the application ------------------------------------------------------------------


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat(timespec="seconds")


def _entry(record: VersionRecord) -> FileEntry:
    return FileEntry(name=record.name, version=record.version, size=record.size, digest=record.digest.hex(),
                     stored_at=_iso(record.stored_at_ns), modified_at=_iso(record.stat.mtime_ns))


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
        docs_url=None, redoc_url=None, lifespan=lifespan,
    )
    _install_error_handlers(app)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Range"],
                           expose_headers=["Content-Range", "Content-Length"], allow_credentials=False)

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
            raise ApiError(401, "unauthorized", "this server needs a bearer token (Authorization: Bearer TOKEN)",
                           {"WWW-Authenticate": "Bearer"})
        principal = settings.tokens.lookup(credentials.credentials)
        if principal is None:
            raise ApiError(401, "invalid_token", "the bearer token is not valid",
                           {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return principal

    def reader(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        return authenticate(credentials)

    def writer(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
        principal = authenticate(credentials)
        if not principal.can_write:
            raise ApiError(403, "forbidden", f"token {principal.name!r} is read-only")
        return principal

    Reader = Annotated[Principal, Depends(reader)]
    # OpenAPI path parameters cannot describe '/', so the schema shows the pattern of one
    # segment; the route takes the whole rest of the path and checks it as a name.
    FileName = Annotated[str, Path(description="The stored name; its '/' are sent as they are (a/b.txt)",
                                   json_schema_extra={"pattern": f"^{_SEGMENT}$"})]
    Writer = Annotated[Principal, Depends(writer)]

    def record_activity(principal: Principal, action: str, name: str, outcome: str, message: str,
                        size: int = 0, new_bytes: int = 0, duplicate_of: str | None = None) -> None:
        activity.appendleft(ActivityEntry(time=_iso(time.time_ns()), action=action, name=name, outcome=outcome,
                                          message=message, size=size, new_bytes=new_bytes,
                                          duplicate_of=duplicate_of, user=principal.name))

    # ---- API ------------------------------------------------------------------------

    @app.get("/healthz", response_model=Health, tags=["server"],
             summary="Liveness check (open without a token; reveals nothing about the store)")
    def healthz() -> Health:
        return Health(status="ok", version=__version__)

    @app.post(
        "/files", response_model=UploadResult, tags=["files"], summary="Upload a file (the raw request body)",
        responses=_errors(400, *AUTH_ERRORS, 413, 422, 500),
        openapi_extra={"requestBody": {"required": False, "description": "The file's bytes (none: an empty file)",
                                       "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
    )
    async def upload(request: Request, principal: Writer,
                     name: Annotated[str, Query(pattern=NAME_PATTERN,
                                                description="The name to store the file under, as in `put --as`")]
                     ) -> UploadResult:
        stored_name = normalize_name(name)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes:
            raise ApiError(413, "too_large", f"upload is larger than the limit of {settings.max_upload_bytes} bytes")
        body = RequestBody(request.stream(), settings.max_upload_bytes)
        async with upload_slots:
            try:
                summary = await anyio.to_thread.run_sync(
                    functools.partial(store.put_stream, body, stored_name, program=UPLOAD_PROGRAM))
            except UploadTooLarge as error:
                raise ApiError(413, "too_large", str(error)) from None
            except ClientDisconnect:
                # Nothing was committed; the chunks already written are garbage for the next gc.
                log.warning("upload of %s abandoned: the client disconnected after %d bytes",
                            stored_name, body.received)
                raise ApiError(400, "client_disconnected", "the upload was interrupted") from None
        result = summary.results[0]
        outcome, duplicate_of = result.upload_outcome
        message = UPLOAD_MESSAGES[outcome]
        record_activity(principal, "upload", result.name, outcome, message, result.size, result.new_bytes,
                        duplicate_of)
        return UploadResult(name=result.name, version=result.version, outcome=outcome, message=message,
                            duplicate_of=duplicate_of, size=result.size, new_bytes=result.new_bytes)

    @app.get("/files", response_model=FileList, tags=["files"], summary="List files (latest versions, or all)",
             responses=_errors(400, *AUTH_ERRORS, 422))
    def list_files(_principal: Reader,
                   prefix: Annotated[str, Query(pattern=PREFIX_PATTERN,
                                                description="Only names equal to or below this folder")] = "",
                   versions: Annotated[bool, Query(description="Every version, not only the latest")] = False,
                   ) -> FileList:
        return FileList(files=[_entry(record) for record in store.list(prefix, all_versions=versions)])

    @app.get(
        "/files/{name:path}", tags=["files"], summary="Download a file (streamed, verified; supports Range)",
        response_class=StreamingResponse,
        responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                         "description": "The file"},
                   206: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                         "description": "The requested byte range"},
                   **_errors(400, *AUTH_ERRORS, 404, 416, 422, 500)},
    )
    async def download(request: Request, _principal: Reader, name: FileName,
                       version: Annotated[int | None, Query(ge=1, le=MAX_VERSION,
                                                            description="Default: the latest")] = None):
        record = await anyio.to_thread.run_sync(store.catalog.get_version, normalize_name(name), version)
        try:
            wanted = parse_range(request.headers.get("range"), record.size)
        except RangeNotSatisfiable:
            raise ApiError(416, "range_not_satisfiable", f"the file is {record.size} bytes",
                           {"Content-Range": f"bytes */{record.size}"}) from None
        status = 200 if wanted is None else 206
        wanted = wanted or ByteRange(0, record.size)
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{record.digest.hex()}"',
                   "Content-Length": str(wanted.length), "Content-Disposition": _content_disposition(record.name)}
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

    @app.delete("/files/{name:path}", response_model=Removed, tags=["files"],
                summary="Delete a file (every version, or one); its space is freed by the next gc",
                responses=_errors(400, *AUTH_ERRORS, 404, 422))
    def delete(principal: Writer, name: FileName,
               version: Annotated[int | None, Query(ge=1, le=MAX_VERSION,
                                                    description="Default: every version")] = None) -> Removed:
        removed = store.remove([name], version=version)
        for record in removed:
            record_activity(principal, "delete", record.name, "deleted", f"version {record.version} deleted",
                            record.size)
        return Removed(removed=[_entry(record) for record in removed])

    @app.get("/stats", tags=["store"], summary="Store totals: logical, unique and stored bytes, ratios",
             responses=_errors(*AUTH_ERRORS))
    def stats(_principal: Reader) -> dict:
        return store.stats()

    @app.get("/activity", response_model=Activity, tags=["store"],
             summary="Recent uploads and deletions through this server (newest first; kept in memory)",
             responses=_errors(*AUTH_ERRORS))
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


def create_app_for_url(url: str, settings: ServerSettings | None = None, *,
                       passphrase: bytes | None = None) -> tuple[FastAPI, Store]:
    """Open the store at url and build the app over it; the caller closes the store."""
    store = Store.open(url, passphrase=passphrase)
    return create_app(store, settings), store
