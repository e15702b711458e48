"""Users: readers, reviewers, adjudicators, managers, auditors."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset.auth.passwords import hash_password
from truthset.domain.errors import ConflictError, InputError, NotFoundError
from truthset.domain.roles import Role, Tier
from truthset.store.models import User
from truthset.store.pages import Page, paginate

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")


def add_user(
    session: Session,
    *,
    username: str,
    role: str,
    tier: int = 1,
    specialty: str = "",
    display_name: str = "",
    password: str | None = None,
) -> User:
    """Add a user. User names are unique and never reused.

    Raises
    ------
    InputError
        Bad user name, unknown role, tier outside 1–3, or a password shorter than 12.
    ConflictError
        The user name is taken.
    """
    if not _USERNAME.match(username):
        raise InputError(
            "user name must be 1–100 characters of letters, digits, '.', '_', '@' or '-'",
            field="username",
        )
    try:
        role_value = Role(role)
    except ValueError:
        raise InputError(
            f"unknown role {role!r}; roles: {', '.join(r.value for r in Role)}", field="role"
        ) from None
    try:
        tier_value = Tier(int(tier))
    except ValueError:
        raise InputError("tier must be 1, 2 or 3", field="tier") from None
    if password is not None and len(password) < 12:
        raise InputError("password must have at least 12 characters", field="password")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise ConflictError(f"field 'username': user {username!r} already exists")
    user = User(
        username=username,
        display_name=display_name or username,
        role=role_value.value,
        tier=int(tier_value),
        specialty=specialty,
        password_hash=hash_password(password) if password is not None else None,
    )
    session.add(user)
    session.flush()
    return user


def find_user(session: Session, username: str) -> User | None:
    """The user with this name, or ``None`` when there is none."""
    return session.scalar(select(User).where(User.username == username))


def get_user(session: Session, username: str) -> User:
    """The user with this name.

    Raises
    ------
    NotFoundError
        No such user.
    """
    user = find_user(session, username)
    if user is None:
        raise NotFoundError(f"no user {username!r}")
    return user


def users_page(session: Session, *, cursor: str | None, limit: int) -> Page[User]:
    """One page of every user, in id order (see :func:`truthset.store.pages.paginate`).

    Raises
    ------
    InputError
        ``cursor`` is not a cursor this server issued (field ``cursor``).
    """
    return paginate(session, select(User), User.id, cursor=cursor, limit=limit)


def users_by_name(session: Session) -> dict[str, User]:
    """Every user, keyed by user name."""
    return {u.username: u for u in session.scalars(select(User))}
