"""Errors the service answers with, and the handlers that turn them into JSON responses.

Every error body is ``{"error": <code>, "detail": <what went wrong and how to fix it>}``.
"""

from __future__ import annotations

from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.core.logging import LOGGER


class ServiceError(Exception):
    """An error with an HTTP status, a short code and a message for the client."""

    status = HTTPStatus.INTERNAL_SERVER_ERROR
    code = "internal_error"

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class InvalidInput(ServiceError):
    status, code = HTTPStatus.UNPROCESSABLE_ENTITY, "invalid_request"


class NotFound(ServiceError):
    status, code = HTTPStatus.NOT_FOUND, "not_found"


class Conflict(ServiceError):
    status, code = HTTPStatus.CONFLICT, "conflict"


class TooLarge(ServiceError):
    status, code = HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too_large"


class Unauthorized(ServiceError):
    status, code = HTTPStatus.UNAUTHORIZED, "unauthorized"


class Forbidden(ServiceError):
    status, code = HTTPStatus.FORBIDDEN, "forbidden"


class Unavailable(ServiceError):
    """503: not ready, out of in-flight budget, or out of GPU memory. Always has Retry-After."""

    status, code = HTTPStatus.SERVICE_UNAVAILABLE, "unavailable"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, {"Retry-After": str(retry_after)})


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> str:
    lines = []
    for item in exc.errors():
        where = ".".join(str(part) for part in item.get("loc", ())) or "body"
        lines.append(f"{where}: {str(item.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "; ".join(lines)


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(exc.status, exc.code, exc.detail, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(
        HTTPStatus.UNPROCESSABLE_ENTITY, "invalid_request", _validation_detail(exc)
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    LOGGER.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(
        HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error", "internal error; see the server log"
    )


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
