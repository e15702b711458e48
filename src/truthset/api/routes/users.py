"""Users (administrators) and API tokens issued for them."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Path, Response

from truthset.api.deps import CtxDep
from truthset.api.models import Page, TokenCreated, TokenIn, TokenOut, UserIn, UserOut, UserPatch
from truthset.api.routes.common import PREFIX, Cursor, Limit
from truthset.api.util import DEFAULT_LIMIT, check_if_match, etag_of
from truthset.auth import policy, sessions, tokens
from truthset.auth.policy import Action
from truthset.store.models import User
from truthset.workspace.users import add_user, get_user, users_page

router = APIRouter(prefix=PREFIX + "/users", tags=["users"])

Username = Annotated[str, Path(min_length=1, max_length=100)]


def _etag(user: User) -> str:
    return etag_of(UserOut.model_validate(user).model_dump(mode="json"))


@router.get("", response_model=Page[UserOut])
def list_users(ctx: CtxDep, cursor: Cursor = None, limit: Limit = DEFAULT_LIMIT) -> Page[UserOut]:
    """Every user (administrators)."""
    policy.authorize(ctx.session, ctx.principal, Action.USER_ADMIN)
    rows, nxt = users_page(ctx.session, cursor=cursor, limit=limit)
    return Page[UserOut](items=[UserOut.model_validate(u) for u in rows], next_cursor=nxt)


@router.post("", response_model=UserOut, status_code=201)
def create_user(body: UserIn, ctx: CtxDep) -> UserOut:
    """Add a user (administrators)."""
    policy.authorize(ctx.session, ctx.principal, Action.USER_ADMIN)
    user = add_user(ctx.session, username=body.username, role=body.role, tier=body.tier,
                    specialty=body.specialty, display_name=body.display_name,
                    password=body.password)
    return UserOut.model_validate(user)


@router.get("/{username}", response_model=UserOut)
def read_user(username: Username, ctx: CtxDep, response: Response) -> UserOut:
    """One user (yourself, or anyone for administrators); the ETag guards PATCH."""
    if username != ctx.principal.username:
        policy.authorize(ctx.session, ctx.principal, Action.USER_ADMIN)
    user = get_user(ctx.session, username)
    response.headers["ETag"] = _etag(user)
    return UserOut.model_validate(user)


@router.patch("/{username}", response_model=UserOut,
              responses={412: {"description": "stale If-Match"},
                         428: {"description": "If-Match missing"}})
def update_user(
    username: Username, body: UserPatch, ctx: CtxDep, response: Response,
    if_match: Annotated[str | None, Header()] = None,
) -> UserOut:
    """Change a user (administrators); send ``If-Match`` with the ETag you read.
    Deactivating a user ends their browser sessions."""
    policy.authorize(ctx.session, ctx.principal, Action.USER_ADMIN)
    user = get_user(ctx.session, username)
    check_if_match(if_match, _etag(user))
    for name, value in body.model_dump(exclude_unset=True).items():
        if value is not None:
            setattr(user, name, value)
    ctx.session.flush()
    if not user.active:
        sessions.end_user_sessions(ctx.session, user)
    response.headers["ETag"] = _etag(user)
    return UserOut.model_validate(user)


@router.post("/{username}/tokens", response_model=TokenCreated, status_code=201)
def create_user_token(username: Username, body: TokenIn, ctx: CtxDep) -> TokenCreated:
    """Issue an API token for a user, e.g. a service account (administrators)."""
    policy.authorize(ctx.session, ctx.principal, Action.USER_ADMIN)
    user = get_user(ctx.session, username)
    lifetime = timedelta(days=body.expires_in_days) if body.expires_in_days else None
    issued = tokens.create_token(ctx.session, user, name=body.name, lifetime=lifetime)
    return TokenCreated(**TokenOut.model_validate(issued.token).model_dump(),
                        token=issued.secret)
