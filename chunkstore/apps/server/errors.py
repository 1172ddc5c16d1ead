"""One error schema for every error the server answers: `{"code": ..., "message": ...}`.

Library errors, FastAPI's validation errors, Starlette's HTTP errors, the request guard
and unexpected failures all leave through error_response, so a client parses one shape.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from chunkstore.errors import (
    ChunkstoreError,
    ConcurrentModificationError,
    IntegrityError,
    InvalidArgumentError,
    NotFoundError,
    WrongKeyError,
)

log = logging.getLogger("chunkstore.apps.server")


class ErrorBody(BaseModel):
    code: str
    message: str


ERROR_MEANINGS = {
    400: "invalid_argument / invalid_request: a name chunkstore refuses, or a parameter of the wrong type or form",
    401: "unauthorized / invalid_token: no bearer token, or an unknown one",
    403: "forbidden / cross_origin: a read-only token asked to change something, or a page of another site did",
    404: "not_found: no such name or version",
    408: "body_timeout: the upload's body stopped arriving",
    409: "conflict: a gc collected what the upload deduplicated against meanwhile; nothing was stored, upload again",
    413: "too_large: the upload passes the server's size limit",
    416: "range_not_satisfiable: the Range is outside the file",
    421: "unknown_host: the Host header names a host this server was not started for",
    500: "integrity_error: damaged or missing stored data (or another store error)",
}


def error_responses(*statuses: int) -> dict:
    """The `responses` of a route for the OpenAPI schema."""
    return {status: {"model": ErrorBody, "description": ERROR_MEANINGS[status]} for status in statuses}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def library_error(error: ChunkstoreError) -> ApiError:
    """The library's exit codes, as HTTP statuses with stable codes."""
    if isinstance(error, InvalidArgumentError):
        return ApiError(400, "invalid_argument", str(error))
    if isinstance(error, NotFoundError):
        return ApiError(404, "not_found", str(error))
    if isinstance(error, IntegrityError):
        return ApiError(500, "integrity_error", str(error))
    if isinstance(error, ConcurrentModificationError):
        return ApiError(409, "conflict", str(error))
    if isinstance(error, WrongKeyError):
        return ApiError(500, "store_key_error", str(error))
    return ApiError(500, "store_error", str(error))


_HTTP_ERROR_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request, error: ApiError):
        return error_response(error.status, error.code, error.message, error.headers)

    @app.exception_handler(ChunkstoreError)
    async def chunkstore_error(_request, error: ChunkstoreError):
        mapped = library_error(error)
        return error_response(mapped.status, mapped.code, mapped.message)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception):
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return error_response(500, "internal_error", f"the server failed: {type(error).__name__}")

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, error: RequestValidationError):
        # A parameter of the wrong type or form is a bad request like a refused name: 400, not
        # FastAPI's 422, so every refused argument has the same status.
        details = "; ".join(f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors())
        return error_response(400, "invalid_request", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        headers = dict(getattr(error, "headers", None) or {})
        if error.status_code == 405:
            # Starlette names only the first route matching the path; list every method of the path.
            headers["Allow"] = ", ".join(
                sorted(
                    {
                        method
                        for route in request.app.router.routes
                        if isinstance(route, APIRoute) and route.path_regex.match(request.scope["path"])
                        for method in route.methods or ()
                    }
                )
            )
        return error_response(
            error.status_code, _HTTP_ERROR_CODES.get(error.status_code, "http_error"), str(error.detail), headers
        )
