"""Server-side browser sessions with a rotating (one-time) CSRF synchronizer token.

The cookie carries a random secret; the database keeps its SHA-256, so a session is revoked by
marking its row (logout, admin action) and cannot be forged from a database copy. Each
cookie-authenticated unsafe request must present the current CSRF token in ``X-CSRF-Token``;
the token is then replaced, so a token cannot be replayed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from truthset.auth._secrets import aware, digest, new_secret, now, same_digest
from truthset.auth.errors import AuthenticationError, CsrfError
from truthset.store.models import User, WebSession

DEFAULT_LIFETIME = timedelta(hours=12)


@dataclass(frozen=True)
class StartedSession:
    """A new session: its row, the cookie secret and the first CSRF token (both shown once)."""

    row: WebSession
    secret: str
    csrf_token: str


def start_session(
    session: Session, user: User, *, method: str = "password",
    lifetime: timedelta = DEFAULT_LIFETIME,
) -> StartedSession:
    """Open a session for ``user`` (after they proved who they are)."""
    secret = new_secret()
    csrf = new_secret()
    row = WebSession(
        session_hash=digest(secret), user_id=user.id, csrf_hash=digest(csrf), method=method,
        expires_at=now() + lifetime,
    )
    session.add(row)
    session.flush()
    return StartedSession(row, secret, csrf)


def resolve_session(session: Session, secret: str, *, at: datetime | None = None) -> WebSession:
    """The live session whose cookie secret is ``secret``.

    Raises
    ------
    AuthenticationError
        Unknown, ended or expired session, or an inactive user.
    """
    row = session.scalar(select(WebSession).where(WebSession.session_hash == digest(secret)))
    if row is None or row.revoked_at is not None:
        raise AuthenticationError("no such session (signed out or revoked)")
    expires = aware(row.expires_at)
    if expires is None or expires <= (at or now()):
        raise AuthenticationError("the session has expired; sign in again")
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        raise AuthenticationError("the session's user is inactive")
    return row


def consume_csrf(session: Session, row: WebSession, presented: str | None) -> str:
    """Check the presented CSRF token against the session's current one and rotate it.

    The check and the rotation are one conditional UPDATE, so two requests racing with the same
    token cannot both pass. Returns the next token.

    Raises
    ------
    CsrfError
        No token, or not the current one (a replay or a forgery).
    """
    if not presented:
        raise CsrfError("missing CSRF token: send the current token in the X-CSRF-Token header")
    if not same_digest(presented, row.csrf_hash):
        raise CsrfError("invalid or already used CSRF token (tokens are single-use)")
    return _rotate(session, row, expected=row.csrf_hash)


def issue_csrf(session: Session, row: WebSession) -> str:
    """Replace the session's CSRF token with a fresh one and return it."""
    return _rotate(session, row, expected=row.csrf_hash)


def _rotate(session: Session, row: WebSession, *, expected: str) -> str:
    fresh = new_secret()
    result = session.execute(
        update(WebSession)
        .where(WebSession.id == row.id, WebSession.csrf_hash == expected)
        .values(csrf_hash=digest(fresh))
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise CsrfError("invalid or already used CSRF token (tokens are single-use)")
    session.expire(row, ["csrf_hash"])
    return fresh


def end_session(session: Session, row: WebSession) -> None:
    """Sign out: the session can never be used again."""
    if row.revoked_at is None:
        row.revoked_at = now()
        session.flush()


def end_user_sessions(session: Session, user: User) -> int:
    """Revoke every live session of ``user`` (password change, deactivation); return how many."""
    rows = session.scalars(
        select(WebSession).where(WebSession.user_id == user.id, WebSession.revoked_at.is_(None))
    ).all()
    for row in rows:
        row.revoked_at = now()
    session.flush()
    return len(rows)
