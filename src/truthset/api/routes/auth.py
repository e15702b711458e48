"""Sign-in and sign-out, CSRF tokens, API tokens of the caller, OpenID Connect."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import RedirectResponse

from truthset import audit
from truthset.api.deps import SESSION_COOKIE, ApiSettings, CtxDep
from truthset.api.models import (
    CsrfOut,
    LoginIn,
    MembershipOut,
    MeOut,
    SessionOut,
    TokenCreated,
    TokenIn,
    TokenOut,
    UserOut,
)
from truthset.api.routes.common import PREFIX
from truthset.auth import memberships, sessions, tokens
from truthset.auth.errors import AuthenticationError
from truthset.auth.login import password_login
from truthset.domain.errors import InputError, NotFoundError
from truthset.store.models import User, WebSession
from truthset.workspace.users import find_user
from truthset.workspace.workspace import Workspace

router = APIRouter(prefix=PREFIX + "/auth", tags=["auth"])


def _set_cookie(request: Request, response: Response, settings: ApiSettings,
                started: sessions.StartedSession) -> None:
    secure = (settings.secure_cookies if settings.secure_cookies is not None
              else request.url.scheme == "https")
    response.set_cookie(
        SESSION_COOKIE, started.secret, httponly=True, secure=secure,
        samesite=settings.same_site,  # type: ignore[arg-type]
        max_age=int(settings.session_lifetime.total_seconds()), path="/",
    )


def _session_out(user: User, started: sessions.StartedSession) -> SessionOut:
    return SessionOut(user=UserOut.model_validate(user), csrf_token=started.csrf_token,
                      expires_at=started.row.expires_at)


@router.post("/login", response_model=SessionOut,
             responses={401: {"description": "wrong credentials"},
                        429: {"description": "locked after too many failures"}})
def login(body: LoginIn, request: Request, response: Response) -> SessionOut:
    """Sign in with a user name and password; sets the session cookie."""
    workspace: Workspace = request.app.state.workspace
    settings: ApiSettings = request.app.state.settings
    address = request.client.host if request.client else None
    with workspace.unit("anonymous") as session:
        outcome = password_login(session, body.username, body.password, address=address,
                                 policy=settings.throttle,
                                 lifetime=settings.session_lifetime)
        result = (_session_out(outcome.user, outcome.started)
                  if outcome.user is not None and outcome.started is not None else None)
    if outcome.error is not None or result is None or outcome.started is None:
        raise outcome.error or AuthenticationError("sign-in failed")
    _set_cookie(request, response, settings, outcome.started)
    return result


@router.post("/logout", status_code=204)
def logout(ctx: CtxDep, response: Response) -> None:
    """End the browser session (the cookie can never be used again)."""
    if ctx.principal.via != "session":
        raise InputError("logout ends browser sessions; revoke an API token with "
                         "DELETE /api/v1/auth/tokens/{id}", field="Authorization")
    row = ctx.session.get(WebSession, ctx.principal.credential_id)
    assert row is not None
    sessions.end_session(ctx.session, row)
    audit.record(ctx.session, action="logout", entity_type="web_sessions", entity_id=row.id)
    response.delete_cookie(SESSION_COOKIE, path="/")


@router.get("/me", response_model=MeOut)
def me(ctx: CtxDep) -> MeOut:
    """Who you are and your roles in each project."""
    user = ctx.session.get(User, ctx.principal.user_id)
    assert user is not None
    return MeOut(
        user=UserOut.model_validate(user), via=ctx.principal.via,
        memberships=[MembershipOut(project=k, username=user.username, role=m.role,
                                   created_at=m.created_at)
                     for k, m in memberships.memberships_of(ctx.session, user.id)],
    )


@router.get("/csrf", response_model=CsrfOut)
def csrf(ctx: CtxDep) -> CsrfOut:
    """A fresh CSRF token for this browser session (the previous one stops working)."""
    if ctx.principal.via != "session":
        raise InputError("CSRF tokens belong to browser sessions", field="Authorization")
    row = ctx.session.get(WebSession, ctx.principal.credential_id)
    assert row is not None
    return CsrfOut(csrf_token=sessions.issue_csrf(ctx.session, row))


@router.get("/tokens", response_model=list[TokenOut])
def my_tokens(ctx: CtxDep) -> list[TokenOut]:
    """Your API tokens (without secrets), newest first."""
    user = ctx.session.get(User, ctx.principal.user_id)
    assert user is not None
    return [TokenOut.model_validate(t) for t in tokens.list_tokens(ctx.session, user)]


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_my_token(body: TokenIn, ctx: CtxDep) -> TokenCreated:
    """Create an API token for yourself; the secret is in the reply, this once."""
    user = ctx.session.get(User, ctx.principal.user_id)
    assert user is not None
    lifetime = timedelta(days=body.expires_in_days) if body.expires_in_days else None
    issued = tokens.create_token(ctx.session, user, name=body.name, lifetime=lifetime)
    return TokenCreated(**TokenOut.model_validate(issued.token).model_dump(),
                        token=issued.secret)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_my_token(token_id: Annotated[int, Path(ge=1, le=2**62)], ctx: CtxDep) -> None:
    """Revoke one of your API tokens."""
    user = ctx.session.get(User, ctx.principal.user_id)
    assert user is not None
    tokens.revoke_token(ctx.session, token_id, user=user)


@router.get("/oidc/login", status_code=302, response_class=RedirectResponse)
def oidc_login(request: Request) -> RedirectResponse:
    """Start single sign-on: redirects to the identity provider."""
    settings: ApiSettings = request.app.state.settings
    if settings.oidc is None:
        raise NotFoundError("single sign-on is not configured on this server")
    workspace: Workspace = request.app.state.workspace
    with workspace.unit("anonymous") as session:
        url = settings.oidc.begin(session)
    return RedirectResponse(url, status_code=302)


@router.get("/oidc/callback", response_model=SessionOut)
def oidc_callback(
    request: Request, response: Response,
    code: Annotated[str, Query(min_length=1, max_length=2000)],
    state: Annotated[str, Query(min_length=1, max_length=500)],
) -> SessionOut:
    """Finish single sign-on: the provider redirects here; sets the session cookie."""
    settings: ApiSettings = request.app.state.settings
    client = settings.oidc
    if client is None:
        raise NotFoundError("single sign-on is not configured on this server")
    workspace: Workspace = request.app.state.workspace
    error: AuthenticationError | None = None
    result: SessionOut | None = None
    started: sessions.StartedSession | None = None
    with workspace.unit("anonymous") as session:
        try:
            claims = client.finish(session, code=code, state=state)
            name = client.username(claims)
            user = find_user(session, name)
            if user is None or not user.active:
                raise AuthenticationError("no active Truthset user matches this sign-in")
            started = sessions.start_session(session, user, method="oidc",
                                             lifetime=settings.session_lifetime)
            audit.record(session, action="login", entity_type="users", entity_id=user.id,
                         after={"method": "oidc", "session": started.row.id,
                                "issuer": client.config.issuer}, actor=user.username)
            result = _session_out(user, started)
        except AuthenticationError as exc:
            error = exc
            audit.record(session, action="login_failed", entity_type="users",
                         after={"method": "oidc", "reason": str(exc)[:200]})
    if error is not None or result is None or started is None:
        raise error or AuthenticationError("sign-in failed")
    _set_cookie(request, response, settings, started)
    return result
