"""Project memberships: which role a user holds in which project."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from truthset.domain.errors import ConflictError, InputError, NotFoundError
from truthset.domain.roles import Role
from truthset.store.models import Membership, Project, User


def parse_role(role: str) -> Role:
    """The :class:`Role` named ``role``.

    Raises
    ------
    InputError
        Unknown role (field ``role``).
    """
    try:
        return Role(role)
    except ValueError:
        raise InputError(
            f"unknown role {role!r}; roles: {', '.join(r.value for r in Role)}", field="role"
        ) from None


def add_member(session: Session, project: Project, user: User, role: str) -> Membership:
    """Give ``user`` ``role`` in ``project``.

    Raises
    ------
    InputError
        Unknown role.
    ConflictError
        The user already holds that role there.
    """
    value = parse_role(role).value
    exists = session.scalar(
        select(Membership.id).where(
            Membership.project_id == project.id, Membership.user_id == user.id,
            Membership.role == value,
        )
    )
    if exists is not None:
        raise ConflictError(
            f"field 'role': {user.username!r} is already {value} in project {project.key!r}"
        )
    row = Membership(project_id=project.id, user_id=user.id, role=value)
    session.add(row)
    session.flush()
    return row


def remove_member(session: Session, project: Project, user: User, role: str) -> None:
    """Take ``role`` in ``project`` away from ``user``.

    Raises
    ------
    NotFoundError
        The user does not hold that role there.
    """
    value = parse_role(role).value
    row = session.scalar(
        select(Membership).where(
            Membership.project_id == project.id, Membership.user_id == user.id,
            Membership.role == value,
        )
    )
    if row is None:
        raise NotFoundError(f"{user.username!r} is not {value} in project {project.key!r}")
    session.delete(row)
    session.flush()


def roles_in(session: Session, user_id: int, project_id: int) -> frozenset[Role]:
    """The roles ``user_id`` holds in ``project_id`` through memberships."""
    return frozenset(
        Role(r)
        for r in session.scalars(
            select(Membership.role).where(
                Membership.user_id == user_id, Membership.project_id == project_id
            )
        )
    )


def members(session: Session, project: Project) -> list[tuple[User, Membership]]:
    """Every membership of ``project`` with its user, ordered by membership id."""
    return [
        (u, m)
        for m, u in session.execute(
            select(Membership, User)
            .join(User, User.id == Membership.user_id)
            .where(Membership.project_id == project.id)
            .order_by(Membership.id)
        ).all()
    ]


def project_ids_of(session: Session, user_id: int) -> set[int]:
    """Projects where ``user_id`` holds any role."""
    return set(session.scalars(select(Membership.project_id).where(Membership.user_id == user_id)))


def memberships_of(session: Session, user_id: int) -> list[tuple[str, Membership]]:
    """Every role ``user_id`` holds, as (project key, membership), ordered by project key and
    role."""
    return [
        (key, m)
        for key, m in session.execute(
            select(Project.key, Membership)
            .join(Project, Project.id == Membership.project_id)
            .where(Membership.user_id == user_id)
            .order_by(Project.key, Membership.role)
        ).all()
    ]
