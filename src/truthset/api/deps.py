"""The per-request unit of work: authenticate the caller, open one transaction acting as them.

Credentials, in order: ``Authorization: Bearer <API token>``, then the session cookie. A
cookie-authenticated unsafe request (POST, PUT, PATCH, DELETE) must carry the current CSRF token
in ``X-CSRF-Token``; the reply carries the next one in the same header.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Header, Request, Response
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from truthset.auth import sessions, tokens
from truthset.auth.errors import AuthenticationError
from truthset.auth.oidc import OidcClient
from truthset.auth.policy import Principal
from truthset.auth.throttle import ThrottlePolicy
from truthset.store.db import Session
from truthset.store.models import User
from truthset.workspace.workspace import Workspace

SESSION_COOKIE = "truthset_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class ApiSettings:
    """Server settings.

    Attributes
    ----------
    max_body_bytes:
        Largest JSON body accepted.
    max_upload_bytes:
        Largest upload (multipart) body accepted.
    secure_cookies:
        ``True``/``False`` forces the cookie's ``Secure`` flag; ``None`` sets it when the request
        came over https (directly or through a proxy's ``X-Forwarded-Proto``).
    same_site:
        The session cookie's ``SameSite`` (``lax`` or ``strict``).
    session_lifetime:
        How long a browser session lasts.
    throttle:
        Sign-in throttling limits.
    oidc:
        The OpenID Connect client, when SSO is configured.
    max_concurrency:
        Requests one server process works on at once (keep it below the database connection
        pool, 5 + 10 by default); the rest queue without holding a thread or a connection.
    queue_timeout_s:
        How long a queued request waits for its turn before it is answered 503.
    """

    max_body_bytes: int = 1 << 20
    max_upload_bytes: int = 512 << 20
    secure_cookies: bool | None = None
    same_site: str = "lax"
    session_lifetime: timedelta = sessions.DEFAULT_LIFETIME
    throttle: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    oidc: OidcClient | None = None
    max_concurrency: int = 12
    queue_timeout_s: float = 30.0


@dataclass
class Ctx:
    """What a route gets: the open transaction and who is acting."""

    session: Session
    principal: Principal
    workspace: Workspace
    settings: ApiSettings


_bearer = HTTPBearer(auto_error=False, description="An API token (`truthset token create`).")
_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False,
                       description="Browser session (POST /api/v1/auth/login).")


def _principal(user: User, via: str, credential_id: int) -> Principal:
    return Principal(user_id=user.id, username=user.username, global_role=user.role, via=via,
                     credential_id=credential_id)


def authenticate(
    session: Session, request: Request, response: Response, *,
    bearer: str | None, cookie: str | None, csrf: str | None,
) -> Principal:
    """Who is calling; for cookie calls with an unsafe method, check and rotate the CSRF token.

    Raises
    ------
    AuthenticationError
        No valid credentials.
    CsrfError
        Cookie call without the current CSRF token.
    """
    if bearer:
        token = tokens.resolve_token(session, bearer)
        user = session.get(User, token.user_id)
        assert user is not None
        return _principal(user, "token", token.id)
    if cookie:
        row = sessions.resolve_session(session, cookie)
        user = session.get(User, row.user_id)
        assert user is not None
        if request.method not in SAFE_METHODS:
            response.headers[CSRF_HEADER] = sessions.consume_csrf(session, row, csrf)
        return _principal(user, "session", row.id)
    raise AuthenticationError(
        "sign in first: send an API token (Authorization: Bearer …) or a session cookie"
    )


def get_ctx(
    request: Request,
    response: Response,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
    csrf: Annotated[str | None, Header(alias=CSRF_HEADER, include_in_schema=False)] = None,
) -> Iterator[Ctx]:
    """Open the request's unit of work as the authenticated caller.

    Everything the route writes is one transaction, audited with the caller's name; an error
    anywhere rolls all of it back.
    """
    workspace: Workspace = request.app.state.workspace
    settings: ApiSettings = request.app.state.settings
    with workspace.unit("anonymous") as session:
        principal = authenticate(
            session, request, response,
            bearer=bearer.credentials if bearer else None, cookie=cookie, csrf=csrf,
        )
        session.info["actor"] = principal.actor
        request.state.principal = principal
        yield Ctx(session, principal, workspace, settings)


CtxDep = Annotated[Ctx, Depends(get_ctx)]
