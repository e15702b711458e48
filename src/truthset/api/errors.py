"""Mapping errors to HTTP replies with one JSON body shape: ``{"error", "field", "detail"}``.

Denied attempts (403) are written to the audit log in a transaction of their own, after the
request's transaction was rolled back, so a refusal leaves a trace and nothing else.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from truthset import audit
from truthset.api import logs
from truthset.auth.errors import AuthenticationError, CsrfError, ThrottledError
from truthset.domain.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    PermissionDeniedError,
    TruthsetError,
)
from truthset.store.errors import IntegrityError, OperationalError, PoolTimeoutError

log = logging.getLogger("truthset.api")

_FIELD_IN_MESSAGE = re.compile(r"field '([^']+)'")


class PreconditionFailedError(TruthsetError):
    """``If-Match`` names a version that is no longer current (HTTP 412)."""


class PreconditionRequiredError(TruthsetError):
    """An update came without ``If-Match`` (HTTP 428)."""


def error_body(error: str, detail: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    """The JSON body of every error reply."""
    return {"error": error, "field": field, "detail": detail, **extra}


def _reply(
    status: int, error: str, detail: str, field: str | None = None,
    headers: dict[str, str] | None = None, **extra: Any,
) -> JSONResponse:
    return JSONResponse(error_body(error, detail, field, **extra), status_code=status,
                        headers=headers)


def _field_of(message: str) -> str | None:
    match = _FIELD_IN_MESSAGE.search(message)
    return match.group(1) if match else None


def _loc_field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie") and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts) or "body"


def _audit_denied(request: Request, reason: str) -> None:
    workspace = getattr(request.app.state, "workspace", None)
    if workspace is None:
        return
    principal = getattr(request.state, "principal", None)
    actor = principal.actor if principal is not None else "anonymous"
    route = request.scope.get("route")
    try:
        with workspace.unit(actor) as session:
            audit.record(
                session, action="denied", entity_type="request",
                after={"method": request.method, "path": request.url.path,
                       "route": getattr(route, "path", None), "reason": reason},
            )
    except Exception:  # pragma: no cover - the refusal is still returned
        log.exception("could not audit a denied request")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app`` (and keep exception messages out of the API's log)."""
    logs.install()

    @app.exception_handler(InputError)
    def _input(_request: Request, exc: InputError) -> JSONResponse:
        return _reply(422, "invalid_input", str(exc), exc.field)

    @app.exception_handler(RequestValidationError)
    def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first: dict[str, Any] = dict(errors[0]) if errors else {"loc": ("body",),
                                                                  "msg": "invalid request"}
        field = _loc_field(first.get("loc", ("body",)))
        detail = f"{field}: {first.get('msg', 'invalid')}"
        if first.get("type") == "json_invalid":
            ctx = first.get("ctx") or {}
            field, detail = "body", f"malformed JSON: {ctx.get('error', '')}"
        issues = [{"field": _loc_field(e.get("loc", ())), "detail": str(e.get("msg", ""))}
                  for e in errors]
        return _reply(422, "invalid_input", detail, field, issues=issues)

    @app.exception_handler(NotFoundError)
    def _not_found(_request: Request, exc: NotFoundError) -> JSONResponse:
        return _reply(404, "not_found", str(exc))

    @app.exception_handler(ConflictError)
    def _conflict(_request: Request, exc: ConflictError) -> JSONResponse:
        return _reply(409, "conflict", str(exc), _field_of(str(exc)))

    @app.exception_handler(IntegrityError)
    def _integrity(_request: Request, _exc: IntegrityError) -> JSONResponse:
        return _reply(409, "conflict", "the change conflicts with the stored state; reload "
                      "and try again")

    @app.exception_handler(OperationalError)
    def _operational(_request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", type(exc.orig).__name__)
        return _reply(503, "unavailable", "the database is busy or unavailable; retry",
                      headers={"Retry-After": "1"})

    @app.exception_handler(PoolTimeoutError)
    def _overloaded(_request: Request, _exc: PoolTimeoutError) -> JSONResponse:
        # Every database connection of this process stayed busy for the pool's whole wait:
        # the server is over capacity. Tell the client to come back rather than fail.
        log.warning("database connection pool exhausted")
        return _reply(503, "overloaded", "the server is busy; retry shortly",
                      headers={"Retry-After": "1"})

    @app.exception_handler(PermissionDeniedError)
    def _denied(request: Request, exc: PermissionDeniedError) -> JSONResponse:
        _audit_denied(request, str(exc))
        field = "X-CSRF-Token" if isinstance(exc, CsrfError) else None
        return _reply(403, "csrf" if isinstance(exc, CsrfError) else "forbidden", str(exc),
                      field)

    @app.exception_handler(AuthenticationError)
    def _unauthenticated(_request: Request, exc: AuthenticationError) -> JSONResponse:
        return _reply(401, "unauthenticated", str(exc), "Authorization",
                      headers={"WWW-Authenticate": 'Bearer realm="truthset"'})

    @app.exception_handler(ThrottledError)
    def _throttled(_request: Request, exc: ThrottledError) -> JSONResponse:
        return _reply(429, "throttled", str(exc), "username",
                      headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(PreconditionFailedError)
    def _stale(_request: Request, exc: PreconditionFailedError) -> JSONResponse:
        return _reply(412, "precondition_failed", str(exc), "If-Match")

    @app.exception_handler(PreconditionRequiredError)
    def _needs_match(_request: Request, exc: PreconditionRequiredError) -> JSONResponse:
        return _reply(428, "precondition_required", str(exc), "If-Match")

    @app.exception_handler(StarletteHTTPException)
    def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                 413: "payload_too_large", 415: "unsupported_media_type"}
        field = "body" if exc.status_code in (400, 413, 415) else None
        return _reply(exc.status_code, names.get(exc.status_code, "http_error"),
                      str(exc.detail), field, headers=getattr(exc, "headers", None))

    @app.exception_handler(TruthsetError)
    def _failed(_request: Request, exc: TruthsetError) -> JSONResponse:
        log.error("request failed: %s", type(exc).__name__)
        return _reply(500, "failed", "the server could not complete the request")
