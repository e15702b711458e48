"""Password sign-in: throttling, argon2id verification, rehash on login, audit events.

:func:`password_login` never raises for a wrong password: it records the failure (which must be
committed even though the sign-in fails) and returns an outcome the caller turns into a reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cache

from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset import audit
from truthset.auth import sessions, throttle
from truthset.auth.errors import AuthenticationError, ThrottledError
from truthset.auth.passwords import hash_password, needs_rehash, verify_password
from truthset.store.models import User

#: One message for every failure, so that it does not tell which user names exist.
BAD_CREDENTIALS = "wrong user name or password"


@cache
def _dummy_hash() -> str:
    return hash_password("not a real password, only to spend the same time")


@dataclass
class LoginOutcome:
    """What a sign-in attempt came to: a session, or the error to reply with."""

    user: User | None = None
    started: sessions.StartedSession | None = None
    error: AuthenticationError | ThrottledError | None = None


def password_login(
    session: Session,
    username: str,
    password: str,
    *,
    address: str | None,
    policy: throttle.ThrottlePolicy,
    lifetime: timedelta = sessions.DEFAULT_LIFETIME,
) -> LoginOutcome:
    """Check a user name and password and open a session when they are right.

    Locked keys are refused before any password check (HTTP 429). A failure counts against the
    user name and the client address and writes a ``login_failed`` event (and ``lockout`` when
    it locks a key); a success writes ``login``, clears the user's failure count and rehashes
    the password when the hashing parameters were raised since it was stored.
    """
    keys = throttle.keys_for(username, address)
    who = {"username": username[:100], "address": address}
    try:
        throttle.check(session, keys)
    except ThrottledError as exc:
        audit.record(session, action="login_throttled", entity_type="users", after=who)
        return LoginOutcome(error=exc)
    user = session.scalar(select(User).where(User.username == username))
    stored = user.password_hash if user is not None else None
    ok = verify_password(stored or _dummy_hash(), password) and stored is not None
    if not ok or user is None or not user.active:
        locked = throttle.record_failure(session, keys, policy)
        audit.record(session, action="login_failed", entity_type="users",
                     entity_id=user.id if user else None, after=who)
        if locked:
            audit.record(session, action="lockout", entity_type="users",
                         entity_id=user.id if user else None,
                         after={**who, "keys": locked, "seconds": int(policy.lock.total_seconds())})
        return LoginOutcome(error=AuthenticationError(BAD_CREDENTIALS))
    assert stored is not None
    if needs_rehash(stored):
        user.password_hash = hash_password(password)
    throttle.record_success(session, username)
    started = sessions.start_session(session, user, method="password", lifetime=lifetime)
    audit.record(session, action="login", entity_type="users", entity_id=user.id,
                 after={"method": "password", "session": started.row.id, "address": address},
                 actor=user.username)
    return LoginOutcome(user=user, started=started)
