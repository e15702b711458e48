"""Sign-in accounts for the demo in the browser (``truthset demo --serve``).

:func:`demo_logins` gives one demo user of each role a fresh random password (printed once by
the command, stored only as an argon2id hash; the change is audited with the hash redacted) and
makes every demo user a member of the demo project in their own role, so the web application
shows each of them the pages of that role. Nothing about the simulated reads changes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select

from truthset.auth.memberships import add_member, roles_in
from truthset.auth.passwords import hash_password
from truthset.domain.roles import Role
from truthset.store.models import User
from truthset.workspace import projects, users
from truthset.workspace.workspace import Workspace

#: One sign-in per role: user name, role, tier, display name (made when the demo lacks them).
DEMO_ACCOUNTS: tuple[tuple[str, str, int, str], ...] = (
    ("ana", "annotator", 1, "Reader Ana"),
    ("ben", "annotator", 1, "Reader Ben"),
    ("rita", "reviewer", 2, "Rita"),
    ("sam", "adjudicator", 3, "Sam"),
    ("max", "manager", 1, "Max"),
    ("audrey", "auditor", 1, "Audrey Auditor"),
)


@dataclass(frozen=True)
class DemoLogin:
    """A demo account the browser can sign in with."""

    username: str
    role: str
    password: str


def demo_logins(workspace: Workspace, project_key: str, *, actor: str = "demo") -> list[DemoLogin]:
    """Give each :data:`DEMO_ACCOUNTS` user a fresh password; return the sign-ins.

    Every active non-admin user becomes a member of ``project_key`` in their global role (the
    roles they already had there stay), so project pages list the right people.
    """
    logins: list[DemoLogin] = []
    with workspace.unit(actor) as session:
        project = projects.get_project(session, project_key)
        for name, role, tier, display in DEMO_ACCOUNTS:
            user = session.scalar(select(User).where(User.username == name))
            if user is None:
                user = users.add_user(session, username=name, role=role, tier=tier,
                                      display_name=display)
            password = secrets.token_urlsafe(12)
            user.password_hash = hash_password(password)
            logins.append(DemoLogin(name, user.role, password))
        for user in session.scalars(select(User).where(User.active.is_(True))
                                    .order_by(User.id)):
            if user.role in (Role.ADMIN.value, Role.SERVICE.value):
                continue
            if Role(user.role) not in roles_in(session, user.id, project.id):
                add_member(session, project, user, user.role)
    return logins
