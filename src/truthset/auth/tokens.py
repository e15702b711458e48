"""API tokens for scripts: ``Authorization: Bearer <token>``.

The secret is shown once at creation; the database keeps its SHA-256 only, so a stolen database
does not yield usable tokens. Tokens expire and can be revoked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset.auth._secrets import aware, digest, new_secret, now
from truthset.auth.errors import AuthenticationError
from truthset.domain.errors import InputError, NotFoundError
from truthset.store.models import ApiToken, User

#: Recognisable prefix (secret scanners can find leaked tokens).
TOKEN_PREFIX = "tst_"
DEFAULT_LIFETIME = timedelta(days=90)


@dataclass(frozen=True)
class IssuedToken:
    """A token just created: its row and the secret (never stored, shown once)."""

    token: ApiToken
    secret: str


def create_token(
    session: Session,
    user: User,
    *,
    name: str = "",
    lifetime: timedelta | None = DEFAULT_LIFETIME,
) -> IssuedToken:
    """Create a token for ``user``; ``lifetime=None`` makes one that never expires.

    Raises
    ------
    InputError
        The user is inactive, or the lifetime is not positive.
    """
    if not user.active:
        raise InputError(f"user {user.username!r} is inactive", field="user")
    if lifetime is not None and lifetime <= timedelta(0):
        raise InputError("a token lifetime must be positive", field="expires_in_days")
    secret = new_secret(TOKEN_PREFIX)
    row = ApiToken(
        user_id=user.id,
        name=name[:100],
        token_hash=digest(secret),
        expires_at=None if lifetime is None else now() + lifetime,
    )
    session.add(row)
    session.flush()
    return IssuedToken(row, secret)


def resolve_token(session: Session, secret: str, *, at: datetime | None = None) -> ApiToken:
    """The live token whose secret is ``secret`` (its user is loaded and active).

    Raises
    ------
    AuthenticationError
        Unknown, revoked or expired token, or an inactive user.
    """
    moment = at or now()
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest(secret)))
    if row is None:
        raise AuthenticationError("unknown API token")
    if row.revoked_at is not None:
        raise AuthenticationError("the API token was revoked")
    expires = aware(row.expires_at)
    if expires is not None and expires <= moment:
        raise AuthenticationError("the API token has expired")
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        raise AuthenticationError("the token's user is inactive")
    return row


def revoke_token(session: Session, token_id: int, *, user: User | None = None) -> ApiToken:
    """Revoke a token by id (only among ``user``'s tokens when given). Idempotent.

    Raises
    ------
    NotFoundError
        No such token (for that user).
    """
    row = session.get(ApiToken, token_id)
    if row is None or (user is not None and row.user_id != user.id):
        raise NotFoundError(f"no API token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = now()
        session.flush()
    return row


def revoke_secret(session: Session, secret: str) -> ApiToken:
    """Revoke the token whose secret is ``secret``.

    Raises
    ------
    NotFoundError
        No token has that secret.
    """
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest(secret)))
    if row is None:
        raise NotFoundError("no API token with that secret")
    return revoke_token(session, row.id)


def list_tokens(session: Session, user: User) -> list[ApiToken]:
    """A user's tokens, newest first (revoked and expired ones included)."""
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())
        )
    )
