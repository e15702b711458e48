"""The FastAPI application: :func:`create_app` builds it around an open workspace.

``uvicorn --factory truthset.api.app:create_app_from_env`` (what ``truthset serve`` runs) opens
the workspace named by ``TRUTHSET_WORKSPACE``. OpenAPI is served at ``/openapi.json`` and
``/docs``. While the app runs (its lifespan), the process keeps time for the periodic tasks
when the jobs backend is ``inprocess`` (:func:`truthset.jobs.schedule.start_in_process`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from truthset.api.deps import ApiSettings
from truthset.api.errors import install_error_handlers
from truthset.api.limits import BodyLimitMiddleware, ConcurrencyLimitMiddleware
from truthset.api.routes import (
    audit,
    auth,
    items,
    jobs,
    monitoring,
    projects,
    releases,
    tasks,
    users,
)
from truthset.api.routes.common import PREFIX
from truthset.api.routes.dicomweb import router as dicomweb_router
from truthset.api.webapp import mount_webapp
from truthset.auth.oidc import OidcClient, OidcConfig
from truthset.workspace.workspace import Workspace

log = logging.getLogger("truthset.api")

API_VERSION = "1"


def _is_upload(method: str, path: str) -> bool:
    if method == "POST" and path.startswith("/dicomweb/"):
        return True  # STOW-RS
    return method == "POST" and path.startswith(PREFIX + "/projects/") and path.endswith("/items")


def create_app(workspace: Workspace, settings: ApiSettings | None = None) -> FastAPI:
    """Build the API around ``workspace``.

    Parameters
    ----------
    workspace:
        The open workspace every request works in (one unit of work per request).
    settings:
        Limits, cookie and sign-in settings; defaults when ``None``.
    """
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        from truthset.jobs.schedule import start_in_process

        scheduler = start_in_process(workspace)
        try:
            yield
        finally:
            if scheduler is not None:
                scheduler.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="Truthset API",
        version=API_VERSION,
        description="Auditable ground truth for medical AI. Authenticate with "
                    "`Authorization: Bearer <token>` or a session cookie plus `X-CSRF-Token`.",
    )
    app.state.workspace = workspace
    app.state.settings = settings or ApiSettings()
    install_error_handlers(app)
    tasks.install_refusal_handler(app)
    for module in (auth, users, projects, items, monitoring, audit, releases, jobs, tasks):
        app.include_router(module.router)
    app.include_router(dicomweb_router)

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.middleware("http")
    async def access_log(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # Log the route template, never the concrete path or query: no item metadata or
        # patient data enters log lines, ids only.
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:
            log.exception("unhandled error on %s", request.method)
            response = JSONResponse(
                {"error": "internal", "field": None,
                 "detail": "the server could not complete the request"}, status_code=500)
        route = request.scope.get("route")
        principal = getattr(request.state, "principal", None)
        log.info("%s %s %d %.1fms user=%s", request.method, getattr(route, "path", "-"),
                 response.status_code, (time.perf_counter() - started) * 1000,
                 principal.user_id if principal else "-")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    settings_now: ApiSettings = app.state.settings
    app.add_middleware(ConcurrencyLimitMiddleware, limit=settings_now.max_concurrency,
                       queue_timeout=settings_now.queue_timeout_s)
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=settings_now.max_body_bytes,
        upload_limit=settings_now.max_upload_bytes,
        is_upload=_is_upload,
    )
    # Last: the web application's fallback route answers every path no router took.
    mount_webapp(app)
    return app


def settings_from_env() -> ApiSettings:
    """Settings from ``TRUTHSET_*`` environment variables (OIDC when ``TRUTHSET_OIDC_ISSUER``
    is set, with ``_CLIENT_ID``, ``_CLIENT_SECRET``, ``_REDIRECT_URI``)."""
    settings = ApiSettings()
    if os.environ.get("TRUTHSET_MAX_CONCURRENCY"):
        settings.max_concurrency = int(os.environ["TRUTHSET_MAX_CONCURRENCY"])
    if os.environ.get("TRUTHSET_MAX_UPLOAD_MB"):
        settings.max_upload_bytes = int(os.environ["TRUTHSET_MAX_UPLOAD_MB"]) << 20
    secure = os.environ.get("TRUTHSET_SECURE_COOKIES")
    if secure:
        settings.secure_cookies = secure.lower() in ("1", "true", "yes")
    issuer = os.environ.get("TRUTHSET_OIDC_ISSUER")
    if issuer:
        settings.oidc = OidcClient(OidcConfig(
            issuer=issuer,
            client_id=os.environ["TRUTHSET_OIDC_CLIENT_ID"],
            client_secret=os.environ.get("TRUTHSET_OIDC_CLIENT_SECRET", ""),
            redirect_uri=os.environ["TRUTHSET_OIDC_REDIRECT_URI"],
        ))
    return settings


def create_app_from_env() -> FastAPI:
    """The app for the workspace in ``TRUTHSET_WORKSPACE`` (the uvicorn factory)."""
    return create_app(Workspace.open(), settings_from_env())
